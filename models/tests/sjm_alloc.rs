//! The per-event path allocates nothing: the online step and the stability filter update, over
//! valid, invalid and unreliable rows, run under a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tickpipe_models::sjm::{SjmFitConfig, SjmModel};
use tickpipe_models::stability::{StabilityConfig, StabilityFilter};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: allocations can happen while the thread's locals are torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards its arguments unchanged to the system allocator, which meets
// `GlobalAlloc`'s contract; counting only touches a const-initialised thread-local `Cell`,
// which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `alloc`'s contract, which is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: `ptr` was allocated by `System` with `layout` (all allocations go there).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn step_and_filter_update_do_not_allocate() {
    let f = 6;
    let mut rows = Vec::new();
    let mut state = 1u64;
    for t in 0..4000 {
        for j in 0..f {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            let regime = (t / 500) % 3;
            rows.push(regime as f64 * (j as f64 + 1.0) + u);
        }
    }
    let names: Vec<String> = (0..f).map(|j| format!("f{j}")).collect();
    let (model, _) = SjmModel::fit(
        &rows,
        f,
        &names,
        &SjmFitConfig {
            n_states: 3,
            jump_penalty: 2.0,
            ..SjmFitConfig::default()
        },
    )
    .expect("fit");
    let mut filter = StabilityFilter::new(&StabilityConfig::default(), &model).expect("filter");
    let mut online = model.new_online();
    let nan_row = vec![f64::NAN; f];
    let zero_row = vec![0.0; f];
    let before = allocations();
    let mut acc = 0u64;
    for (t, x) in rows.chunks_exact(f).enumerate() {
        let x = match t % 97 {
            0 => &nan_row[..],
            1 => &zero_row[..],
            2 => &x[..f - 1],
            _ => x,
        };
        let step = model.step(&mut online, x);
        let out = filter.update(t as u64 * 1_000_000_000, &step, x);
        acc += u64::from(out.regime) + u64::from(out.flags) + u64::from(step.valid);
    }
    let after = allocations();
    assert!(acc > 0);
    assert_eq!(after - before, 0, "allocations on the per-event path");
    // The counter works.
    let v = std::hint::black_box(vec![1u8; 16]);
    assert!(allocations() > after);
    drop(v);
}
