"""One whole-attention layer at a detection size, in each form ONNX Runtime could run it (#37's speed levers).

    python benches/bench_attention.py [--grid 50x84] [--heads 8] [--head-dim 32] [--chunks 10] [--rounds 20]

RMT-T's stage 3 at 800x1344 is one whole attention over a 50x84 token grid (4,200 tokens, 8 heads of 32).
Each variant below is one ONNX graph of that layer, fed the same q, k, v (1, N, heads*d):

  whole, folded mask     ONNX Attention with the (heads, N, N) decay from two tables by one Add, which
                         ONNX Runtime folds into a constant at load (the form before #37)
  chunks, plain ops      what the deploy form ships: per chunk of query rows MatMul, the decay's row and
                         column terms by two broadcast Adds, Softmax, MatMul
  chunks, Attention      per chunk one Add builds the chunk's (heads, q, N) mask from the two terms (fed
                         as inputs, so nothing folds), then ONNX Attention with it as attn_mask
  chunks, MHA            the same mask as com.microsoft.MultiHeadAttention's attention_bias
  chunks, folded masks   ONNX Attention with each chunk's mask a constant (10 chunks hold the whole mask)
  chunks, slid table     ONNX Attention with each chunk's mask a Slice of one table over 2h-1 key rows,
                         (heads, q, (2h-1)*w): the chunk starting at row r0 takes key rows h-1-r0 onwards
  chunks, no decay       MatMul, Softmax, MatMul per chunk: the floor of any exact form that adds a decay
  whole, no decay        ONNX Attention without a mask (ONNX Runtime's memory-efficient CPU path): the
                         floor of the layer's matmuls and softmax with no decay at all

With --openvino each graph also runs on OpenVINO (CPU, f32), timed in the same rounds.
For each it prints the median of --rounds interleaved runs (2 threads by default) and the peak
resident memory of a fresh process that loads the graph and runs it once. Read the ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VARIANTS = ["whole, folded mask", "chunks, plain ops", "chunks, Attention", "chunks, MHA", "chunks, folded masks",
            "chunks, slid table", "chunks, slid run-time", "chunks, no decay", "whole, no decay"]


def _gamma(heads: int) -> np.ndarray:
    """Per-head log decay, RMT's form: log(1 - 2^(-2 - 4 * head / heads))."""
    return np.log(1 - 2.0 ** (-2 - np.arange(heads) * (4.0 / heads))).astype(np.float32)


def tables(heads: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The decay's per-query row and column terms, (heads, N, h, 1) and (heads, N, 1, w), RMT's gammas."""
    gamma = _gamma(heads)
    i, j = np.divmod(np.arange(h * w), w)
    rows = gamma[:, None, None] * np.abs(i[None, :, None] - np.arange(h)[None, None, :])
    cols = gamma[:, None, None] * np.abs(j[None, :, None] - np.arange(w)[None, None, :])
    return rows[..., None].astype(np.float32), cols[:, :, None, :].astype(np.float32)


def build(variant: str, heads: int, h: int, w: int, d: int, chunks: int) -> tuple[onnx.ModelProto, dict]:
    """The variant's graph and the extra feeds it takes (its run-time decay terms)."""
    n, c = h * w, heads * d
    rows, cols = tables(heads, h, w)
    nodes, inits, extra_inputs, feeds = [], [], [], {}
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n, c]) for name in ("q", "k", "v")]

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, ins, outs, domain="", **attrs):
        nodes.append(helper.make_node(op, ins, outs, domain=domain, **attrs))
        return outs[0]

    def heads4(name):  # (1, N, C) → (1, heads, N, d)
        r = node("Reshape", [name, const(f"{name}_s", np.array([1, n, heads, d]))], [f"{name}_r"])
        return node("Transpose", [r], [f"{name}4"], perm=[0, 2, 1, 3])

    step = -(-h // chunks)
    spans = [(r0 * w, min(r0 + step, h) * w) for r0 in range(0, h, step)]
    if variant == "whole, folded mask":
        mask = node("Add", [const("rows5", rows.reshape(heads, h, w, h, 1)[:, :, :1]),
                            const("cols5", cols.reshape(heads, h, w, 1, w)[:, :1])], ["mask5"])
        mask = node("Reshape", [mask, const("mask_s", np.array([heads, n, n]))], ["mask"])
        node("Attention", ["q", "k", "v", mask], ["out"], q_num_heads=heads, kv_num_heads=heads, scale=1.0)
    elif variant == "whole, no decay":
        node("Attention", ["q", "k", "v"], ["out"], q_num_heads=heads, kv_num_heads=heads, scale=1.0)
    elif variant in ("chunks, plain ops", "chunks, no decay"):
        q4, k4, v4 = heads4("q"), heads4("k"), heads4("v")
        kt = node("Transpose", [k4], ["kt"], perm=[0, 1, 3, 2])
        parts = []
        for i, (t0, t1) in enumerate(spans):
            qc = node("Slice", [q4, const(f"b{i}", np.array([t0])), const(f"e{i}", np.array([t1])),
                                const(f"a{i}", np.array([2]))], [f"qc{i}"])
            s = node("MatMul", [qc, kt], [f"s{i}"])
            if variant == "chunks, plain ops":
                s = node("Reshape", [s, const(f"s5_{i}", np.array([1, heads, t1 - t0, h, w]))], [f"s5{i}"])
                s = node("Add", [s, const(f"rt{i}", rows[:, t0:t1])], [f"sr{i}"])
                s = node("Add", [s, const(f"ct{i}", cols[:, t0:t1])], [f"sc{i}"])
                s = node("Reshape", [s, const(f"s4_{i}", np.array([1, heads, t1 - t0, n]))], [f"s4{i}"])
            p = node("Softmax", [s], [f"p{i}"], axis=-1)
            parts.append(node("MatMul", [p, v4], [f"o{i}"]))
        o = node("Concat", parts, ["o_all"], axis=2)
        o = node("Transpose", [o], ["ot"], perm=[0, 2, 1, 3])
        node("Reshape", [o, const("o_s", np.array([1, n, c]))], ["out"])
    elif variant in ("chunks, folded masks", "chunks, slid table", "chunks, slid run-time"):
        if variant != "chunks, folded masks":
            rows_per = spans[0][1] // w
            a = np.arange(rows_per)[:, None, None, None]  # (local query row, query col, extended key row, key col)
            ext = np.arange(2 * h - 1)[None, None, :, None] - (h - 1)
            j, jk = np.arange(w)[None, :, None, None], np.arange(w)[None, None, None, :]
            gamma = _gamma(heads)[:, None, None, None, None]
            table = gamma * (np.abs(a - ext) + np.abs(j - jk))[None]
            table = table.reshape(heads, rows_per * w, (2 * h - 1) * w).astype(np.float32)
            if variant == "chunks, slid table":
                const("table", table)
            else:  # the table as a graph input: nothing to fold, built once per stage at run time
                feeds["table"] = table
                extra_inputs.append(helper.make_tensor_value_info("table", TensorProto.FLOAT, list(table.shape)))
        parts = []
        for i, (t0, t1) in enumerate(spans):
            if variant != "chunks, folded masks":
                r0 = t0 // w
                m = node("Slice", ["table", const(f"mb{i}", np.array([0, (h - 1 - r0) * w])),
                                   const(f"me{i}", np.array([t1 - t0, (2 * h - 1 - r0) * w])),
                                   const(f"ma{i}", np.array([1, 2]))], [f"m{i}"])
            else:
                m = const(f"m{i}", (rows[:, t0:t1] + cols[:, t0:t1]).reshape(heads, t1 - t0, n))
            qc = node("Slice", ["q", const(f"b{i}", np.array([t0])), const(f"e{i}", np.array([t1])),
                                const(f"a{i}", np.array([1]))], [f"qc{i}"])
            parts.append(node("Attention", [qc, "k", "v", m], [f"o{i}"], q_num_heads=heads, kv_num_heads=heads,
                              scale=1.0))
        node("Concat", parts, ["out"], axis=1)
    else:  # chunks with a run-time mask into a fused op
        mha = variant == "chunks, MHA"
        parts = []
        for i, (t0, t1) in enumerate(spans):
            r_name, c_name = f"rows{i}", f"cols{i}"
            feeds[r_name], feeds[c_name] = rows[:, t0:t1], cols[:, t0:t1]
            for name, a in ((r_name, feeds[r_name]), (c_name, feeds[c_name])):
                extra_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape)))
            m = node("Add", [r_name, c_name], [f"m5{i}"])
            m = node("Reshape", [m, const(f"m_s{i}", np.array([1, heads, t1 - t0, n]))], [f"m{i}"])
            qc = node("Slice", ["q", const(f"b{i}", np.array([t0])), const(f"e{i}", np.array([t1])),
                                const(f"a{i}", np.array([1]))], [f"qc{i}"])
            if mha:
                parts.append(node("MultiHeadAttention", [qc, "k", "v", "", "", m], [f"o{i}"], domain="com.microsoft",
                                  num_heads=heads, scale=1.0))
            else:
                parts.append(node("Attention", [qc, "k", "v", m], [f"o{i}"], q_num_heads=heads, kv_num_heads=heads,
                                  scale=1.0))
        node("Concat", parts, ["out"], axis=1)
    graph = helper.make_graph(nodes, "attention", io + extra_inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, n, c])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model, feeds


def qkv(n: int, c: int) -> dict:
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal((1, n, c)) * 0.3).astype(np.float32) for name in ("q", "k", "v")}


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_session(path: Path, threads: int):
    """The graph compiled by OpenVINO at f32, with a ``run(None, feeds)`` like ONNX Runtime's."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    class Session:
        def run(self, _, feeds):
            request.infer(feeds)
            return [request.get_output_tensor(0).data.copy()]
    return Session()


def child(path: str, threads: str, feeds_path: str) -> None:
    """Load one graph, run it once, print the high-water marks (MiB) after load and after the run."""
    def hwm():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    feeds = dict(np.load(feeds_path))
    sess = session(Path(path), int(threads))
    load = hwm()
    sess.run(None, feeds)
    print(json.dumps({"load_mb": round(load), "peak_mb": round(hwm())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="50x84")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--openvino", action="store_true", help="also run each graph on OpenVINO (CPU, f32)")
    args = ap.parse_args()
    h, w = (int(s) for s in args.grid.split("x"))
    heads, d = args.heads, args.head_dim
    work = Path(tempfile.mkdtemp(prefix="rmt-bench-attention-"))
    base = qkv(h * w, heads * d)
    sessions, feeds, memory = {}, {}, {}
    for variant in VARIANTS:
        model, extra = build(variant, heads, h, w, d, args.chunks)
        path = work / f"{VARIANTS.index(variant)}.onnx"
        onnx.save(model, path)
        feeds[variant] = {**base, **extra}
        np.savez(work / f"{VARIANTS.index(variant)}.npz", **feeds[variant])
        done = subprocess.run([sys.executable, __file__, "--child", str(path), str(args.threads),
                               str(work / f"{VARIANTS.index(variant)}.npz")], capture_output=True, text=True)
        memory[variant] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
        sessions[variant] = session(path, args.threads)
        if args.openvino:
            try:
                sessions[variant + " (openvino)"] = openvino_session(path, args.threads)
                feeds[variant + " (openvino)"] = feeds[variant]
            except Exception as e:  # a graph OpenVINO's ONNX frontend does not take
                print(f"  {variant}: OpenVINO refused it: {str(e).splitlines()[0][:120]}")
    reference = sessions["chunks, plain ops"].run(None, feeds["chunks, plain ops"])[0]
    names = list(sessions)
    times = {v: [] for v in names}
    for _ in range(3):
        for v in names:
            sessions[v].run(None, feeds[v])
    for _ in range(args.rounds):
        for v in names:
            start = time.perf_counter()
            sessions[v].run(None, feeds[v])
            times[v].append((time.perf_counter() - start) * 1000)
    print(f"one whole attention, grid {h}x{w} ({h * w} tokens), {heads} heads of {d}, {args.chunks} chunks of "
          f"query rows, {args.threads} threads, median of {args.rounds} interleaved runs (ONNX Runtime CPU)")
    print(f"  {'variant':32s} {'median':>9s} {'vs plain':>9s} {'peak MiB':>9s} {'max |diff|':>11s}")
    plain = statistics.median(times["chunks, plain ops"])
    for v in names:
        ms = statistics.median(times[v])
        diff = float(np.abs(sessions[v].run(None, feeds[v])[0] - reference).max()) if "no decay" not in v else None
        peak = memory[v]["peak_mb"] if memory.get(v) else "—"
        print(f"  {v:32s} {ms:7.1f} ms {plain / ms:8.2f}× {peak:>9} {'—' if diff is None else f'{diff:.1e}':>11}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()
