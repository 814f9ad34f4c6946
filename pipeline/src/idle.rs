//! Idle strategies: what a stage's thread does when a duty cycle found no work.
//!
//! The runner calls [`Idler::idle`] with the work count of every duty cycle, as in Agrona's
//! `idleStrategy.idle(agent.doWork())`. Only [`IdleStrategy::BusySpin`] and
//! [`IdleStrategy::NoOp`] stay off the kernel; the others trade wake-up latency for a free core
//! and make syscalls (`sched_yield`, `nanosleep`/park) while idle.

use std::time::Duration;

/// How a thread waits when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Spin with the CPU's pause hint: lowest wake-up latency, burns the core.
    BusySpin,
    /// Return at once: spins without the pause hint (for cores that are the stage's alone, or
    /// when a caller drives the duty cycle).
    NoOp,
    /// `std::thread::yield_now` between polls.
    Yielding,
    /// Spin, then yield, then park with a doubling timeout; back to spinning on work.
    Backoff {
        /// Idle cycles spent spinning before yielding.
        max_spins: u32,
        /// Idle cycles spent yielding before parking.
        max_yields: u32,
        /// First park.
        min_park: Duration,
        /// Longest park.
        max_park: Duration,
    },
    /// Sleep this long on every idle cycle.
    Sleeping(Duration),
}

impl IdleStrategy {
    /// The default back-off: 1 000 spins, 100 yields, then parks from 1 µs doubling to 1 ms.
    pub const BACKOFF: IdleStrategy = IdleStrategy::Backoff {
        max_spins: 1_000,
        max_yields: 100,
        min_park: Duration::from_micros(1),
        max_park: Duration::from_millis(1),
    };

    /// Whether idling can enter the kernel.
    pub fn makes_syscalls(&self) -> bool {
        !matches!(self, IdleStrategy::BusySpin | IdleStrategy::NoOp)
    }
}

/// The per-thread state of an [`IdleStrategy`].
#[derive(Debug, Clone)]
pub struct Idler {
    strategy: IdleStrategy,
    spins: u32,
    yields: u32,
    park: Duration,
}

impl Idler {
    /// A fresh idler.
    pub fn new(strategy: IdleStrategy) -> Self {
        let park = match strategy {
            IdleStrategy::Backoff { min_park, .. } => min_park,
            _ => Duration::ZERO,
        };
        Self {
            strategy,
            spins: 0,
            yields: 0,
            park,
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// Called after every duty cycle with the work it did: waits only when that was none.
    #[inline]
    pub fn idle(&mut self, work: usize) {
        if work > 0 {
            self.reset();
            return;
        }
        match self.strategy {
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::NoOp => {}
            IdleStrategy::Yielding => std::thread::yield_now(),
            IdleStrategy::Sleeping(d) => std::thread::sleep(d),
            IdleStrategy::Backoff {
                max_spins,
                max_yields,
                min_park,
                max_park,
            } => {
                if self.spins < max_spins {
                    self.spins += 1;
                    std::hint::spin_loop();
                } else if self.yields < max_yields {
                    self.yields += 1;
                    std::thread::yield_now();
                } else {
                    std::thread::park_timeout(self.park);
                    self.park = (self.park * 2).clamp(min_park, max_park);
                }
            }
        }
    }

    /// Back to the first phase (after work was found).
    #[inline]
    pub fn reset(&mut self) {
        if let IdleStrategy::Backoff { min_park, .. } = self.strategy {
            self.spins = 0;
            self.yields = 0;
            self.park = min_park;
        }
    }
}

impl std::str::FromStr for IdleStrategy {
    type Err = String;

    /// `busy-spin`, `no-op`, `yielding`, `backoff`, or `sleeping:<duration>` (e.g. `sleeping:1ms`).
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "busy-spin" => IdleStrategy::BusySpin,
            "no-op" => IdleStrategy::NoOp,
            "yielding" => IdleStrategy::Yielding,
            "backoff" => IdleStrategy::BACKOFF,
            _ => {
                if let Some(d) = s.strip_prefix("sleeping:") {
                    IdleStrategy::Sleeping(crate::config::parse_duration(d)?)
                } else if s == "sleeping" {
                    IdleStrategy::Sleeping(Duration::from_millis(1))
                } else {
                    return Err(format!(
                        "unknown idle strategy {s:?} (busy-spin, no-op, yielding, backoff, sleeping[:<duration>])"
                    ));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_walks_spin_yield_park_and_resets_on_work() {
        let mut idler = Idler::new(IdleStrategy::Backoff {
            max_spins: 2,
            max_yields: 1,
            min_park: Duration::from_micros(1),
            max_park: Duration::from_micros(4),
        });
        idler.idle(0);
        idler.idle(0);
        assert_eq!((idler.spins, idler.yields), (2, 0));
        idler.idle(0);
        assert_eq!(idler.yields, 1);
        for want in [2, 4, 4] {
            idler.idle(0);
            assert_eq!(idler.park, Duration::from_micros(want));
        }
        idler.idle(3);
        assert_eq!(
            (idler.spins, idler.yields, idler.park),
            (0, 0, Duration::from_micros(1))
        );
    }

    #[test]
    fn parses_names() {
        assert_eq!("busy-spin".parse(), Ok(IdleStrategy::BusySpin));
        assert_eq!(
            "sleeping:2ms".parse(),
            Ok(IdleStrategy::Sleeping(Duration::from_millis(2)))
        );
        assert!(
            "spin"
                .parse::<IdleStrategy>()
                .unwrap_err()
                .contains("busy-spin")
        );
        assert!(!IdleStrategy::BusySpin.makes_syscalls());
        assert!(IdleStrategy::BACKOFF.makes_syscalls());
    }
}
