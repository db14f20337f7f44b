//! Locks that keep working after a panic elsewhere.
//!
//! A `std` lock is poisoned when a thread panics while holding it, and every later `lock()`
//! returns an error. Every critical section of the data plane leaves its data consistent (a field
//! set, a value replaced, an entry inserted or removed), so the data behind a poisoned lock is
//! still good, and one panicking caller (a NIF call, which rustler turns into an exception) must
//! not stop every other sender of the node. These methods return the guard either way.
//!
//! ```
//! use partisan_net::lock::RwLockExt;
//! let members = std::sync::RwLock::new(vec!["a@h".to_string()]);
//! members.write_unpoisoned().push("b@h".into());
//! assert_eq!(members.read_unpoisoned().len(), 2);
//! ```

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub trait MutexExt<T: ?Sized> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub trait RwLockExt<T: ?Sized> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}
