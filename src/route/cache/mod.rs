//! The near-cache's pure parts: what may be cached and under which key
//! (`key`), what a write drops (`writes`), and the store with its fill
//! bookkeeping (`store`). The fill connections (`conn::fill`) and the
//! session (`session::near`) drive them.

pub mod key;
pub mod store;
pub mod writes;

pub use key::{cacheable, entry_key};
pub use store::{FillId, Source, Store};
