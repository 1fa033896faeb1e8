#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (stdlib only, deterministic).

corpus/pth: small torch-format archives (valid state dicts in each storage type, the real
  pickle of a fixture with its storages cut short, truncated copies) and hostile ones
  (memo expansion, deep nesting, sizes that do not fit).
corpus/safetensors: small valid files, truncated copies, headers that lie about sizes.
corpus/pickle: the pickle streams alone.

Run from anywhere: python3 fuzz/make_corpus.py
"""
import io
import json
import os
import struct
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, "tests/fixtures/unet128_ngf8_instance_lsgan/discriminator.pth")


class P:
    """A protocol-2 pickle, opcode by opcode."""

    def __init__(self):
        self.b = bytearray(b"\x80\x02")

    def op(self, x):
        self.b += x
        return self

    def s(self, t):
        t = t.encode()
        return self.op(b"X" + struct.pack("<I", len(t)) + t)

    def i(self, v):
        return self.op(b"J" + struct.pack("<i", v)) if -2**31 <= v < 2**31 else self.op(b"\x8a\x08" + struct.pack("<q", v))

    def g(self, m, n):
        return self.op(b"c" + m.encode() + b"\n" + n.encode() + b"\n")

    def ints(self, v):
        self.op(b"(")
        for x in v:
            self.i(x)
        return self.op(b"t")

    def od(self):
        return self.g("collections", "OrderedDict").op(b")R")

    def done(self):
        return bytes(self.b + b".")


def strides(shape):
    s, acc = [], 1
    for d in reversed(shape):
        s.insert(0, acc)
        acc *= d
    return s


def state_dict(tensors):
    """tensors: (name, storage class, key, storage numel, offset, shape)."""
    p = P().od().op(b"q\x00(")
    for name, cls, key, numel, off, shape in tensors:
        p.s(name).g("torch._utils", "_rebuild_tensor_v2").op(b"(")
        p.op(b"(").s("storage").g("torch", cls).s(key).s("cpu").i(numel).op(b"tQ")
        p.i(off).ints(shape).ints(strides(shape)).op(b"\x89").od().op(b"tR")
    return p.op(b"u")


def entry(name):
    """A stored zip entry with a fixed date, so that the corpus is reproducible."""
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


def archive(pkl, storages):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry("archive/data.pkl"), pkl)
        for k, d in storages:
            z.writestr(entry("archive/data/" + k), d)
        z.writestr(entry("archive/version"), b"3\n")
    return buf.getvalue()


def safetensors(tensors):
    """tensors: (name, dtype, shape, bytes)."""
    header, data = {}, b""
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def f32(v):
    return struct.pack("<%df" % len(v), *v)


def write(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def cpython_pickles():
    """State dicts pickled by CPython's own pickler (protocols 2, 4, 5) the way torch.save
    drives it: persistent ids for storages, `_rebuild_tensor_v2` reductions, `_metadata`. The
    torch names are stand-in modules, so torch is not needed."""
    import collections
    import pickle
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    sys.modules.update({"torch": torch, "torch._utils": utils})
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        pass

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Storage:
        def __init__(self, cls, key, n):
            self.cls, self.key, self.n = cls, key, n

    class T:
        def __init__(self, st, off, size):
            self.st, self.off, self.size = st, off, size

        def __reduce__(self):
            args = (self.st, self.off, tuple(self.size), tuple(strides(self.size)), False, collections.OrderedDict())
            return (_rebuild_tensor_v2, args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return ("storage", o.cls, o.key, "cpu", o.n) if isinstance(o, Storage) else None

    s0, s1 = Storage(torch.FloatStorage, "0", 6), Storage(torch.LongStorage, "1", 1)
    sd = collections.OrderedDict()
    sd["layer.weight"] = T(s0, 0, [2, 2])
    sd["layer.bias"] = T(s0, 4, [2])
    sd["bn.num_batches_tracked"] = T(s1, 0, [])
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("layer", {"version": 1})])
    out = {}
    for proto in (2, 4, 5):
        b = io.BytesIO()
        Pickler(b, protocol=proto).dump(sd)
        out["cpython_p%d" % proto] = b.getvalue()
        b = io.BytesIO()
        Pickler(b, protocol=proto).dump({"epoch": 3, "state_dict": sd, "opt": [1.5, None, True, "x" * 300]})
        out["cpython_p%d_wrapped" % proto] = b.getvalue()
    return out


def main():
    vals = [0.5, -1.0, 2.0, 0.25, 3.0, -0.75]
    pickles = {}

    # Valid state dicts: f32 conv-like weights and bias, shared storage with an offset, each dtype.
    sd = state_dict([("model.0.weight", "FloatStorage", "0", 4, 0, [1, 1, 2, 2]),
                     ("model.0.bias", "FloatStorage", "1", 1, 0, [1]),
                     ("model.1.num_batches_tracked", "LongStorage", "2", 1, 0, [])]).done()
    pickles["valid"] = sd
    write("pth", "valid_f32", archive(sd, [("0", f32(vals[:4])), ("1", f32([0.1])), ("2", struct.pack("<q", 7))]))
    for cls, raw in [("HalfStorage", struct.pack("<6e", *vals)), ("BFloat16Storage", b"".join(struct.pack("<f", v)[2:] for v in vals)),
                     ("DoubleStorage", struct.pack("<6d", *vals))]:
        pk = state_dict([("a", cls, "0", 6, 0, [2]), ("b", cls, "0", 6, 2, [2, 2])]).done()
        write("pth", "valid_" + cls, archive(pk, [("0", raw)]))
    full = open(FIXTURE, "rb").read()
    write("pth", "truncated_half", full[: len(full) // 2][:4096])
    v = archive(sd, [("0", f32(vals[:4])), ("1", f32([0.1])), ("2", struct.pack("<q", 7))])
    for n in (4, 30, len(v) // 2, len(v) - 10):
        write("pth", "truncated_%d" % n, v[:n])

    # The real torch pickle of a fixture, with every storage cut to 16 bytes.
    with zipfile.ZipFile(FIXTURE) as z:
        real = z.read("discriminator/data.pkl")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
            for info in z.infolist():
                data = z.read(info.filename)
                out.writestr(entry(info.filename), data if not info.filename.startswith("discriminator/data/") else data[:16])
        write("pth", "torch_pickle_short_storages", buf.getvalue())
    pickles["torch"] = real

    # Hostile: memo expansion (levels of 50 references), nesting, limits, lying sizes.
    p = P().op(b"Nq\x00")
    for lvl in range(1, 5):
        p.op(b"](" + b"h" + bytes([lvl - 1]) * 1 + (b"h" + bytes([lvl - 1])) * 49 + b"eq" + bytes([lvl]))
    pickles["expansion"] = p.done()
    pickles["nested_lists"] = P().op(b"]" * 200 + b"a" * 199).done()
    pickles["nested_tuples"] = P().op(b"N" + b"\x85" * 100).done()
    pickles["nested_marks"] = P().op(b"(" * 100 + b"l" * 100).done()
    pickles["stack_global"] = P().s("torch._utils").s("_rebuild_tensor_v2").op(b"\x93\x94N").op(b"\x85R.").done()
    pickles["frame_proto4"] = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
    cpython = cpython_pickles()
    pickles.update(cpython)
    storages = [("0", f32(vals)), ("1", struct.pack("<q", 7))]
    for name, pk in cpython.items():
        write("pth", name, archive(pk, storages))
    for name, pk in pickles.items():
        write("pickle", name, pk)
        if name not in ("valid", "torch") and name not in cpython:
            write("pth", "pickle_" + name, archive(pk, []))
    big = state_dict([("w", "FloatStorage", "0", 1 << 40, 0, [1 << 20, 1 << 20])]).done()
    write("pth", "huge_tensor", archive(big, [("0", f32(vals))]))
    short = state_dict([("w", "FloatStorage", "0", 1000, 0, [1000])]).done()
    write("pth", "short_storage", archive(short, [("0", f32(vals))]))
    nan = archive(sd, [("0", f32([float("nan")] * 4)), ("1", f32([float("inf")])), ("2", struct.pack("<q", 7))])
    write("pth", "nan", nan)

    # safetensors.
    st = safetensors([("model.0.weight", "F32", [1, 1, 2, 2], f32(vals[:4])), ("model.0.bias", "F16", [1], struct.pack("<e", 0.1)),
                      ("n", "I64", [], struct.pack("<q", 3)), ("d", "F64", [2], struct.pack("<2d", 1.0, 2.0)),
                      ("b", "BF16", [2], b"\x80\x3f\x00\x40")])
    write("safetensors", "valid", st)
    for n in (7, 20, len(st) // 2, len(st) - 1):
        write("safetensors", "truncated_%d" % n, st[:n])
    h = b'{"w":{"dtype":"F32","shape":[7500000000],"data_offsets":[0,30000000000]}}'
    write("safetensors", "huge_claim", struct.pack("<Q", len(h)) + h + b"\0" * 64)
    h = b'{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}'
    write("safetensors", "overflow", struct.pack("<Q", len(h)) + h + b"\0" * 16)
    h = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    write("safetensors", "overlap", struct.pack("<Q", len(h)) + h + b"\0" * 12)
    write("safetensors", "nan", safetensors([("w", "F32", [2], f32([1.0, float("nan")]))]))
    write("safetensors", "u8", safetensors([("w", "U8", [2], b"\x01\x02")]))
    write("safetensors", "header_len_huge", struct.pack("<Q", 1 << 62) + b"{}")


if __name__ == "__main__":
    main()
