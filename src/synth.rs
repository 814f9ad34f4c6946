//! Seeded synthetic MBO capture generator.
