"""Batched inference anchors for `bench/side_by_side.sh`: the reference U-Net (eval mode) in
PyTorch and ONNX Runtime at a batch size that ../shared/reference/bench_torch.py (batch 1) does
not take. Same networks, initialisation and timing rule (median after 2 warm-up runs).

    python bench/torch_batch.py --ngf 64 --size 256 --batch 4 --n 5
"""
import argparse, os, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "shared", "reference"))
import torch  # noqa: E402
import p2p_ref as r  # noqa: E402
from bench_torch import med  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    g = r.UnetG(ngf=a.ngf, downs={256: 8, 128: 7}[a.size]); r.init_normal(g); g.eval()
    x = torch.rand(a.batch, 3, a.size, a.size) * 2 - 1
    with torch.no_grad():
        ms = med(lambda: g(x), a.n)
    print(f"torch_infer_ms {ms:.1f} ips {1e3 * a.batch / ms:.2f}")
    import onnxruntime as ort
    p = os.path.join(tempfile.mkdtemp(), "g.onnx")
    torch.onnx.export(g, (x,), p, input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    so = ort.SessionOptions(); so.intra_op_num_threads = torch.get_num_threads()
    s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    ms = med(lambda: s.run(None, {"x": xn}), a.n)
    print(f"onnxruntime_infer_ms {ms:.1f} ips {1e3 * a.batch / ms:.2f}")


if __name__ == "__main__":
    main()
