#!/usr/bin/env python3
"""Runs exported pix2pix ONNX models in ONNX Runtime and compares them with `host run` outputs.

    check_onnx.py CASE [CASE ...]      CASE = MODEL.onnx:INPUT.png:EXPECTED.png

Each input image (8-bit RGB) goes through the model as `host run` feeds the network: NCHW
float32, v / 127.5 - 1, batch 1; the output is clamped to [-1, 1], mapped back by
(x + 1) * 127.5 rounded half away from zero, and compared with EXPECTED (the `host run` output
of the same image). A case passes when no channel value differs by more than --tolerance
levels (default 1). The model's interface is checked too: input `input`, output `output`,
float32, symbolic batch/height/width.

ONNX Runtime, numpy and Pillow come from a virtual environment this script creates when the
running Python lacks them: $P2P_ONNX_VENV, else $XDG_CACHE_HOME/pix2pix-onnx-venv (default
~/.cache/pix2pix-onnx-venv), with `pip install onnxruntime numpy pillow`. If that cannot be
done (no network, no venv module), the script prints SKIP and a reason and exits with 77.

Exit status: 0 all cases pass, 1 a mismatch or a bad model, 2 bad arguments, 77 skipped.
"""

import argparse
import os
import subprocess
import sys

SKIP = 77
PACKAGES = ["onnxruntime", "numpy", "pillow"]


def have_modules():
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError:
        return False
    return True


def venv_dir():
    if os.environ.get("P2P_ONNX_VENV"):
        return os.environ["P2P_ONNX_VENV"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "pix2pix-onnx-venv")


def ensure_modules():
    """Returns when onnxruntime, numpy and Pillow import; re-executes under the venv otherwise."""
    if have_modules():
        return
    if os.environ.get("P2P_ONNX_IN_VENV"):
        print("SKIP: the virtual environment at %s lacks %s" % (venv_dir(), " ".join(PACKAGES)))
        sys.exit(SKIP)
    venv = venv_dir()
    python = os.path.join(venv, "bin", "python")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    probe = [python, "-c", "import onnxruntime, numpy, PIL"]
    if not (os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0):
        log("creating %s with %s (once) ..." % (venv, " ".join(PACKAGES)))
        made = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
        if made.returncode != 0:
            print("SKIP: cannot create a virtual environment at %s: %s" % (venv, made.stderr.strip()[-500:]))
            sys.exit(SKIP)
        pip = subprocess.run([python, "-m", "pip", "install", "--quiet"] + PACKAGES, capture_output=True, text=True)
        if pip.returncode != 0:
            print("SKIP: pip could not install %s into %s (no access to PyPI?): %s"
                  % (" ".join(PACKAGES), venv, pip.stderr.strip()[-800:]))
            sys.exit(SKIP)
    env = dict(os.environ, P2P_ONNX_IN_VENV="1")
    os.execve(python, [python] + sys.argv, env)


def to_u8(np, y):
    v = (np.clip(y, -1.0, 1.0) + 1.0) * 127.5
    return np.floor(v + 0.5).astype(np.uint8)  # v >= 0: half away from zero, as the plugin rounds


def check_case(ort, np, Image, model, image, expected, tolerance):
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    problems = []
    if (inp.name, out.name) != ("input", "output"):
        problems.append("names %s -> %s, expected input -> output" % (inp.name, out.name))
    for v in (inp, out):
        if v.type != "tensor(float)":
            problems.append("%s has type %s" % (v.name, v.type))
        if len(v.shape) != 4 or [v.shape[i] for i in (0, 2, 3)] != ["batch", "height", "width"]:
            problems.append("%s has shape %s, expected [batch, C, height, width]" % (v.name, v.shape))
    rgb = np.asarray(Image.open(image).convert("RGB"))
    x = (rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)[None]
    (y,) = sess.run(["output"], {"input": np.ascontiguousarray(x)})
    got = to_u8(np, y[0].transpose(1, 2, 0))
    want = np.asarray(Image.open(expected).convert("RGB"))
    if got.shape != want.shape:
        problems.append("output %s, host run gave %s" % (got.shape, want.shape))
        return problems, None
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    stats = "max_diff %d mean_diff %.5f differing %.4f%% (%dx%d)" % (
        diff.max(), diff.mean(), 100.0 * (diff > 0).mean(), rgb.shape[1], rgb.shape[0])
    if diff.max() > tolerance:
        problems.append("differs from host run by up to %d levels (tolerance %d): %s" % (diff.max(), tolerance, stats))
    return problems, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+", metavar="MODEL.onnx:INPUT.png:EXPECTED.png")
    ap.add_argument("--tolerance", type=int, default=1)
    args = ap.parse_args()
    cases = []
    for c in args.cases:
        parts = c.split(":")
        if len(parts) != 3:
            ap.error("case %r is not MODEL.onnx:INPUT.png:EXPECTED.png" % c)
        cases.append(parts)
    ensure_modules()
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    print("onnxruntime %s, numpy %s" % (ort.__version__, np.__version__))
    failed = 0
    for model, image, expected in cases:
        try:
            problems, stats = check_case(ort, np, Image, model, image, expected, args.tolerance)
        except Exception as e:  # a model ONNX Runtime refuses is a failure of the case, reported
            problems, stats = ["ONNX Runtime: %s: %s" % (type(e).__name__, e)], None
        name = "%s on %s" % (os.path.basename(model), os.path.basename(image))
        if problems:
            failed += 1
            print("FAIL %s: %s" % (name, "; ".join(problems)))
        else:
            print("ok   %s: %s" % (name, stats))
    print("%d of %d cases match host run" % (len(cases) - failed, len(cases)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
