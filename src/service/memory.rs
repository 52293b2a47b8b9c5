//! Memory a thread freed, given back to the system at once.

/// Hands the pages this thread freed back to the system now. The allocator otherwise
/// keeps them cached in the thread that freed them until it allocates again: a thread
/// that decoded a photo (tens of megabytes) or indexed a chunk of long messages, then
/// waits, would hold that memory for nothing.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks and trims the calling thread's own heap; it is
    // harmless when mimalloc is not the global allocator (unit tests).
    unsafe { libmimalloc_sys::mi_collect(true) }
}
