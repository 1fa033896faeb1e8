//! What a checkpoint may make the reader build, checked before anything is allocated.
//!
//! The figures are generous for a state dict (the largest pix2pix generator, ngf 64 U-Net-256,
//! has 57 tensors, 54 M parameters and a 20 KB pickle) and small enough that a hostile file
//! cannot take the host's memory or stack.

/// Limits on one checkpoint read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLimits {
    /// Total size of all tensors once converted to f32. Default: half the physical memory.
    pub max_tensor_bytes: u64,
    /// Tensors in one file.
    pub max_tensors: usize,
    /// Dimensions of one tensor.
    pub max_rank: usize,
    /// Length of a tensor name, in bytes.
    pub max_name_len: usize,
    /// Limits of the pickle in a `.pth` file.
    pub pickle: PickleLimits,
}

/// Limits of the pickle machine (see `pickle.rs`): nothing it builds is ever copied (a memo
/// reference shares the object), so these bound both its memory and its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleLimits {
    /// Size of the pickle stream (`data.pkl`) in bytes.
    pub max_bytes: u64,
    /// Objects created (every opcode that makes a value).
    pub max_objects: usize,
    /// Elements placed in tuples, lists and dicts (a dict entry counts two), memo references
    /// included.
    pub max_items: usize,
    /// Entries on the stack and marks on the mark stack, each.
    pub max_stack: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Nesting depth of containers and calls (a tensor in a state dict sits at depth 5).
    pub max_depth: usize,
    /// Length of a module or class name in a GLOBAL opcode.
    pub max_global_len: usize,
}

impl Default for PickleLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_objects: 1_000_000,
            max_items: 4_000_000,
            max_stack: 1_000_000,
            max_memo: 1_000_000,
            max_depth: 64,
            max_global_len: 256,
        }
    }
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_tensor_bytes: physical_memory().map_or(8 << 30, |m| m / 2),
            max_tensors: 100_000,
            max_rank: 8,
            max_name_len: 1024,
            pickle: PickleLimits::default(),
        }
    }
}

/// Physical memory in bytes (Linux: `MemTotal` in `/proc/meminfo`).
pub fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
