//! The view of a book that the feature calculators read: the top levels of both sides and the
//! trades between book states. Order books fill it; features never see a book's internals.

/// Levels per side that the features read (depth imbalance uses levels 1 to 5).
pub const FEATURE_LEVELS: usize = 5;

/// DBN's "no price" (an empty level in MBP records).
pub const UNDEF_PRICE: i64 = i64::MAX;

/// One price level: aggregated size and order count at a price (DBN fixed point 1e-9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    /// Price, DBN fixed point (1e-9).
    pub price: i64,
    /// Total size resting at the price.
    pub size: u64,
    /// Orders at the price (0 where the source does not say).
    pub count: u32,
}

/// The top [`FEATURE_LEVELS`] levels of both sides, best first. Only the first `bid_levels` /
/// `ask_levels` entries are meaningful; the rest are `Level::default()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Bid levels, highest price first.
    pub bids: [Level; FEATURE_LEVELS],
    /// Ask levels, lowest price first.
    pub asks: [Level; FEATURE_LEVELS],
    /// How many bid levels are filled.
    pub bid_levels: u8,
    /// How many ask levels are filled.
    pub ask_levels: u8,
}

impl Depth {
    /// The best bid, if any.
    #[inline]
    pub fn best_bid(&self) -> Option<Level> {
        (self.bid_levels > 0).then_some(self.bids[0])
    }

    /// The best ask, if any.
    #[inline]
    pub fn best_ask(&self) -> Option<Level> {
        (self.ask_levels > 0).then_some(self.asks[0])
    }

    /// Whether both sides have at least one level.
    #[inline]
    pub fn is_two_sided(&self) -> bool {
        self.bid_levels > 0 && self.ask_levels > 0
    }
}

/// A trade print as the features see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trade {
    /// Price, DBN fixed point (1e-9).
    pub price: i64,
    /// Size.
    pub size: u32,
    /// Aggressor side as DBN writes it: `B` (buyer initiated), `A` (seller initiated), `N`
    /// (not known).
    pub side: u8,
}
