//! File sink that writes through io_uring where the kernel allows it.
