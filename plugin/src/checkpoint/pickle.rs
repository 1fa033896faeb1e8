//! A bounded pickle machine for PyTorch state dicts: it builds values, it never calls anything.
//!
//! candle's pickle reader copies a memoised object on every reference, so a kilobyte pickle in
//! which each level refers twice to the one before expands to all memory; it also recurses on
//! nesting. Here every value lives in one flat arena and is referred to by index: a memo
//! reference shares the object as Python does (nothing is copied), the machine is a loop over
//! opcodes (no recursion), and dropping the arena drops a flat `Vec`, however deep the data.
//! Each opcode consumes input, and [`PickleLimits`] caps objects, container items, stack,
//! memo and nesting depth, so memory and work are bounded by the limits whatever the stream.
//!
//! Opcodes: the subset `torch.save` writes (protocols 2 to 5), plus the few plain ones that cost
//! nothing to support. Anything else is an error naming the opcode and its offset.
//! Globals become inert names: only the torch functions the state-dict reader knows
//! (`pth.rs`) are given a meaning, and nothing is ever executed.

use std::collections::HashMap;

use super::limits::PickleLimits;

/// Index of a value in [`Pickle::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(u32);

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Bytes objects are not needed for state dicts; only their length is kept.
    Bytes(usize),
    /// A `GLOBAL` / `STACK_GLOBAL`: a name, never imported.
    Global {
        module: String,
        name: String,
    },
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// In insertion order; a later equal key is not merged (the reader decides).
    Dict(Vec<(Id, Id)>),
    /// `BINPERSID`: a reference outside the pickle (a tensor storage in `.pth` files).
    Persistent(Id),
    /// `REDUCE` / `NEWOBJ` (`callable(*args)`, not called) and the state a `BUILD` gave it.
    Call {
        callable: Id,
        args: Id,
        state: Option<Id>,
    },
}

/// The values a pickle built and the one it returned.
#[derive(Debug)]
pub struct Pickle {
    values: Vec<Value>,
    root: Id,
}

impl Pickle {
    pub fn root(&self) -> Id {
        self.root
    }
    pub fn get(&self, id: Id) -> &Value {
        &self.values[id.0 as usize]
    }
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn tuple(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }
    /// `(module, name)` of a global.
    pub fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.get(id) {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
    pub fn values(&self) -> usize {
        self.values.len()
    }
}

/// Runs the pickle in `data` to its `STOP`. Errors say what failed and where (byte offset).
pub fn parse(data: &[u8], limits: &PickleLimits) -> Result<Pickle, String> {
    if data.len() as u64 > limits.max_bytes {
        return Err(format!(
            "pickle of {} bytes exceeds the limit of {} bytes",
            data.len(),
            limits.max_bytes
        ));
    }
    let mut m = Machine {
        input: data,
        pos: 0,
        limits,
        values: Vec::new(),
        depth: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        items: 0,
    };
    loop {
        let at = m.pos;
        let op = m.byte()?;
        match m.step(op) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("{e} (opcode 0x{op:02x} at byte {at})")),
        }
    }
    let root = m.pop()?;
    Ok(Pickle { values: m.values, root })
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    limits: &'a PickleLimits,
    values: Vec<Value>,
    /// Nesting depth of each value as built: 1 for scalars, 1 + the deepest element otherwise.
    depth: Vec<u32>,
    stack: Vec<Id>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    /// Elements placed in containers so far.
    items: usize,
}

type Step<T> = Result<T, String>;

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.input.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated: {n} bytes wanted at byte {} of {}",
                self.pos,
                self.input.len()
            ));
        };
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Step<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Step<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Step<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn utf8(&mut self, n: usize) -> Step<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not valid UTF-8".to_string())
    }
    /// A `GLOBAL` argument: text up to a newline, of bounded length.
    fn line(&mut self) -> Step<String> {
        let rest = &self.input[self.pos..];
        let max = self.limits.max_global_len;
        let Some(n) = rest.iter().take(max + 1).position(|&b| b == b'\n') else {
            return Err(format!("GLOBAL name longer than {max} bytes or unterminated"));
        };
        let s = self.utf8(n)?;
        self.pos += 1;
        Ok(s)
    }

    /// Adds a value built from `children` (their depth decides its own).
    fn add(&mut self, value: Value, children: &[Id]) -> Step<Id> {
        // Ids are u32: a limit above that is cut to it.
        if self.values.len() >= self.limits.max_objects.min(u32::MAX as usize) {
            return Err(format!(
                "more than {} objects (limit for a state dict)",
                self.limits.max_objects
            ));
        }
        let depth = 1 + children.iter().map(|c| self.depth[c.0 as usize]).max().unwrap_or(0);
        self.check_depth(depth)?;
        self.values.push(value);
        self.depth.push(depth);
        Ok(Id(self.values.len() as u32 - 1))
    }
    fn check_depth(&self, depth: u32) -> Step<()> {
        if depth as usize > self.limits.max_depth {
            return Err(format!(
                "nesting deeper than {} levels (limit for a state dict)",
                self.limits.max_depth
            ));
        }
        Ok(())
    }
    fn count_items(&mut self, n: usize) -> Step<()> {
        self.items = self.items.saturating_add(n);
        if self.items > self.limits.max_items {
            return Err(format!(
                "more than {} container items (limit for a state dict)",
                self.limits.max_items
            ));
        }
        Ok(())
    }
    fn push(&mut self, id: Id) -> Step<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(format!(
                "stack deeper than {} entries (limit for a state dict)",
                self.limits.max_stack
            ));
        }
        self.stack.push(id);
        Ok(())
    }
    fn push_new(&mut self, value: Value, children: &[Id]) -> Step<()> {
        let id = self.add(value, children)?;
        self.push(id)
    }
    fn pop(&mut self) -> Step<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }
    fn top(&self) -> Step<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&id) if self.stack.len() > floor => Ok(id),
            _ => Err("stack underflow".into()),
        }
    }
    /// Everything pushed since the last `MARK`, which is removed.
    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(mark))
    }
    fn memo_get(&mut self, key: u32) -> Step<()> {
        let id = *self.memo.get(&key).ok_or_else(|| format!("memo entry {key} is not defined"))?;
        self.push(id)
    }
    fn memo_put(&mut self, key: u32) -> Step<()> {
        let id = self.top()?;
        if self.memo.len() >= self.limits.max_memo && !self.memo.contains_key(&key) {
            return Err(format!(
                "more than {} memo entries (limit for a state dict)",
                self.limits.max_memo
            ));
        }
        self.memo.insert(key, id);
        Ok(())
    }
    /// Raises `container`'s depth to hold an element of depth `child_depth`.
    fn deepen(&mut self, container: Id, children: &[Id]) -> Step<()> {
        let inner = children.iter().map(|c| self.depth[c.0 as usize]).max().unwrap_or(0);
        let d = &mut self.depth[container.0 as usize];
        *d = (*d).max(inner + 1);
        let d = *d;
        self.check_depth(d)
    }
    fn append(&mut self, items: Vec<Id>) -> Step<()> {
        self.count_items(items.len())?;
        let list = self.top()?;
        self.deepen(list, &items)?;
        match &mut self.values[list.0 as usize] {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err("APPEND to something that is not a list".into()),
        }
    }
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV (1.85)
    fn set_items(&mut self, items: Vec<Id>) -> Step<()> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of keys and values".into());
        }
        self.count_items(items.len())?;
        let dict = self.top()?;
        self.deepen(dict, &items)?;
        match &mut self.values[dict.0 as usize] {
            Value::Dict(d) => {
                d.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            _ => Err("SETITEM on something that is not a dict".into()),
        }
    }
    fn tuple(&mut self, items: Vec<Id>) -> Step<()> {
        self.count_items(items.len())?;
        let children = items.clone();
        self.push_new(Value::Tuple(items), &children)
    }
    fn call(&mut self, callable: Id, args: Id) -> Step<()> {
        // `OrderedDict()` is the one call a state dict needs the result of: an empty dict.
        let ordered_dict =
            matches!(self.global_name(callable), Some(("collections", "OrderedDict")))
                && matches!(&self.values[args.0 as usize], Value::Tuple(a) if a.is_empty());
        if ordered_dict {
            return self.push_new(Value::Dict(Vec::new()), &[]);
        }
        self.count_items(2)?;
        self.push_new(Value::Call { callable, args, state: None }, &[callable, args])
    }
    fn global_name(&self, id: Id) -> Option<(&str, &str)> {
        match &self.values[id.0 as usize] {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
    fn build(&mut self) -> Step<()> {
        let state = self.pop()?;
        let target = self.top()?;
        match &mut self.values[target.0 as usize] {
            // `__setstate__` of an object: remember the state.
            Value::Call { state: s, .. } => *s = Some(state),
            // An OrderedDict's attributes (`_metadata`) are not items: nothing to keep.
            _ => return Ok(()),
        }
        self.count_items(1)?;
        self.deepen(target, &[state])
    }
    fn global(&mut self, module: String, name: String) -> Step<()> {
        self.push_new(Value::Global { module, name }, &[])
    }

    /// Executes one opcode; `true` at `STOP`.
    fn step(&mut self, op: u8) -> Step<bool> {
        match op {
            b'.' => return Ok(true),
            0x80 => {
                let v = self.byte()?;
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            // FRAME: a length hint only.
            0x95 => {
                self.u64()?;
            }
            b'(' => {
                if self.marks.len() >= self.limits.max_stack {
                    return Err(format!(
                        "more than {} nested MARKs (limit for a state dict)",
                        self.limits.max_stack
                    ));
                }
                self.marks.push(self.stack.len());
            }
            b'N' => self.push_new(Value::None, &[])?,
            0x88 => self.push_new(Value::Bool(true), &[])?,
            0x89 => self.push_new(Value::Bool(false), &[])?,
            b'K' => {
                let v = self.byte()?;
                self.push_new(Value::Int(v.into()), &[])?
            }
            b'M' => {
                let v = self.u16()?;
                self.push_new(Value::Int(v.into()), &[])?
            }
            b'J' => {
                let v = self.u32()? as i32;
                self.push_new(Value::Int(v.into()), &[])?
            }
            0x8a => {
                let n = self.byte()? as usize;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes does not fit 64 bits"));
                }
                let b = self.take(n)?;
                let mut v = [if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 }; 8];
                v[..n].copy_from_slice(b);
                self.push_new(Value::Int(i64::from_le_bytes(v)), &[])?
            }
            b'G' => {
                let b = self.take(8)?;
                let v = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                self.push_new(Value::Float(v), &[])?
            }
            b'X' => {
                let n = self.u32()? as usize;
                let s = self.utf8(n)?;
                self.push_new(Value::Str(s), &[])?
            }
            0x8c => {
                let n = self.byte()? as usize;
                let s = self.utf8(n)?;
                self.push_new(Value::Str(s), &[])?
            }
            0x8d => {
                let n = usize::try_from(self.u64()?).map_err(|_| "BINUNICODE8 length overflows")?;
                let s = self.utf8(n)?;
                self.push_new(Value::Str(s), &[])?
            }
            b'C' => {
                let n = self.byte()? as usize;
                self.take(n)?;
                self.push_new(Value::Bytes(n), &[])?
            }
            b'B' => {
                let n = self.u32()? as usize;
                self.take(n)?;
                self.push_new(Value::Bytes(n), &[])?
            }
            b')' => self.push_new(Value::Tuple(Vec::new()), &[])?,
            b']' => self.push_new(Value::List(Vec::new()), &[])?,
            b'}' => self.push_new(Value::Dict(Vec::new()), &[])?,
            b't' => {
                let items = self.pop_mark()?;
                self.tuple(items)?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = vec![Id(0); n];
                for slot in items.iter_mut().rev() {
                    *slot = self.pop()?;
                }
                self.tuple(items)?
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_new(Value::List(Vec::new()), &[])?;
                self.append(items)?
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push_new(Value::Dict(Vec::new()), &[])?;
                self.set_items(items)?
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])?
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)?
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name)?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) =
                    (&self.values[module.0 as usize], &self.values[name.0 as usize])
                else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                if module.len() > self.limits.max_global_len
                    || name.len() > self.limits.max_global_len
                {
                    return Err(format!(
                        "STACK_GLOBAL name longer than {} bytes",
                        self.limits.max_global_len
                    ));
                }
                let (module, name) = (module.clone(), name.clone());
                self.global(module, name)?
            }
            b'Q' => {
                let pid = self.pop()?;
                self.push_new(Value::Persistent(pid), &[pid])?
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.call(callable, args)?
            }
            b'b' => self.build()?,
            b'q' => {
                let k = self.byte()?;
                self.memo_put(k.into())?
            }
            b'r' => {
                let k = self.u32()?;
                self.memo_put(k)?
            }
            0x94 => {
                let k = u32::try_from(self.memo.len()).map_err(|_| "memo full")?;
                self.memo_put(k)?
            }
            b'h' => {
                let k = self.byte()?;
                self.memo_get(k.into())?
            }
            b'j' => {
                let k = self.u32()?;
                self.memo_get(k)?
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.push(top)?
            }
            _ => return Err("unsupported opcode".into()),
        }
        Ok(false)
    }
}
