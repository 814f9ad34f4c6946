#!/usr/bin/env python3
"""Builds the streaming LSTM fixture models and their goldens for `tickpipe-models`.

Run from the repository root (deterministic: fixed seeds, same bytes every run):

    python3 -m venv .venv && .venv/bin/pip install -r models/scripts/requirements.txt
    .venv/bin/python models/scripts/lstm_golden.py

Writes into models/fixtures/lstm/:

  lstm_h32.onnx            the streaming step model: inputs x [1,1,4], h_in [1,1,32], c_in [1,1,32];
                           outputs y [1,1], h_out [1,1,32], c_out [1,1,32]; an ONNX LSTM node and a
                           Gemm head; metadata_props["tickpipe.features"] = the four bar feature names.
  lstm_h32_golden.csv      two instruments streamed through onnxruntime 1.31.1 (CPU, one thread),
                           h/c carried per instrument: one line per step with the f32 inputs and the
                           f32 output y, written with enough digits to round-trip exactly.
  lstm_h32_final_state.csv the h and c of each instrument after its last step.
  bad_*.onnx   refusal fixtures (wrong signatures, NaN weights, truncated file).
  no_metadata_h8.onnx      a valid step model without feature metadata (positional binding).

The weights are drawn from a fixed seed (uniform in +-1/sqrt(H), the usual LSTM initialisation);
they are not fitted, since the point is numerical parity with onnxruntime, not forecasting skill.
The inputs are a synthetic bar stream (log return, log range, log volume, log trade count) from a
fixed seed with a volatility regime switch, in the ranges the bar features take on real data.
Before writing, the onnxruntime outputs are checked against a plain numpy LSTM (max abs diff
<= 1e-5), so the goldens are known to be what an LSTM computes.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FEATURES = ["bar_log_return", "bar_log_range", "bar_log_volume", "bar_log_trades"]
F = len(FEATURES)
H = 32
O = 1
STEPS = 240
INSTRUMENTS = 2
OPSET = 21
IR_VERSION = 10
SEED = 20240601

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "fixtures", "lstm")


def lstm_weights(rng, h, f, o):
    k = 1.0 / np.sqrt(h)
    w = rng.uniform(-k, k, size=(1, 4 * h, f)).astype(np.float32)
    r = rng.uniform(-k, k, size=(1, 4 * h, h)).astype(np.float32)
    b = rng.uniform(-k, k, size=(1, 8 * h)).astype(np.float32)
    wy = rng.uniform(-k, k, size=(h, o)).astype(np.float32)
    by = rng.uniform(-k, k, size=(o,)).astype(np.float32)
    return w, r, b, wy, by


def build_step_model(
    weights,
    h,
    f,
    o,
    *,
    features=FEATURES,
    elem=TensorProto.FLOAT,
    with_c_in=True,
    h_in_dim=None,
):
    """The streaming step model; keyword arguments produce the refusal variants."""
    w, r, b, wy, by = weights
    np_dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    inits = [
        numpy_helper.from_array(w.astype(np_dtype), "W"),
        numpy_helper.from_array(r.astype(np_dtype), "R"),
        numpy_helper.from_array(b.astype(np_dtype), "B"),
        numpy_helper.from_array(wy.astype(np_dtype), "Wy"),
        numpy_helper.from_array(by.astype(np_dtype), "By"),
        numpy_helper.from_array(np.array([1, h], dtype=np.int64), "head_shape"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", elem, [1, 1, f]),
        helper.make_tensor_value_info("h_in", elem, [1, 1, h_in_dim or h]),
    ]
    if with_c_in:
        inputs.append(helper.make_tensor_value_info("c_in", elem, [1, 1, h]))
    outputs = [
        helper.make_tensor_value_info("y", elem, [1, o]),
        helper.make_tensor_value_info("h_out", elem, [1, 1, h]),
        helper.make_tensor_value_info("c_out", elem, [1, 1, h]),
    ]
    nodes = [
        helper.make_node(
            "LSTM",
            ["x", "W", "R", "B", "", "h_in", "c_in" if with_c_in else ""],
            ["", "h_out", "c_out"],
            hidden_size=h,
            direction="forward",
        ),
        helper.make_node("Reshape", ["h_out", "head_shape"], ["h_flat"]),
        helper.make_node("Gemm", ["h_flat", "Wy", "By"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tickpipe_lstm_step", inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tickpipe-lstm-golden",
    )
    model.ir_version = IR_VERSION
    if features is not None:
        helper.set_model_props(model, {"tickpipe.features": ",".join(features)})
    return model


def build_window_model(weights, h, f, o, window):
    """A fixed-window sequence model x [1,T,F] -> y [1,O] without state inputs (refused)."""
    w, r, b, wy, by = weights
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(r, "R"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(wy, "Wy"),
        numpy_helper.from_array(by, "By"),
        numpy_helper.from_array(np.array([1, h], dtype=np.int64), "head_shape"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, window, f])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, o])]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["x_tbf", "W", "R", "B"], ["", "h_last"], hidden_size=h),
        helper.make_node("Reshape", ["h_last", "head_shape"], ["h_flat"]),
        helper.make_node("Gemm", ["h_flat", "Wy", "By"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tickpipe_lstm_window", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"tickpipe.features": ",".join(FEATURES)})
    return model


def synthetic_bars(rng, n):
    """Bar features with a volatility regime switch: quiet first half, turbulent second half."""
    sigma = np.where(np.arange(n) < n // 2, 4e-4, 1.6e-3)
    ret = sigma * rng.standard_normal(n)
    rng_ = np.abs(ret) + sigma * np.abs(rng.standard_normal(n)) + 1e-5
    volume = np.exp(6.0 + 0.6 * rng.standard_normal(n) + 400.0 * np.abs(ret))
    trades = np.maximum(1.0, np.round(volume / np.exp(1.5 + 0.3 * rng.standard_normal(n))))
    x = np.stack(
        [ret * 100.0, np.log(rng_), np.log(volume), np.log(trades)], axis=1
    ).astype(np.float32)
    return x


def numpy_lstm_step(weights, x, h, c):
    w, r, b, wy, by = (a.astype(np.float64) for a in weights)
    hh = w.shape[1] // 4
    g = w[0] @ x + r[0] @ h + b[0, : 4 * hh] + b[0, 4 * hh :]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    i, o, f, cc = g[:hh], g[hh : 2 * hh], g[2 * hh : 3 * hh], g[3 * hh :]
    c_new = sig(f) * c + sig(i) * np.tanh(cc)
    h_new = sig(o) * np.tanh(c_new)
    y = h_new @ wy + by
    return y, h_new, c_new


def session(model_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def fmt(v):
    # repr of the exact f32 value as a double: parsing it back as f32 gives the same bits.
    return repr(float(np.float32(v)))


def main():
    if ort.__version__ != "1.31.1":
        sys.exit(f"onnxruntime 1.31.1 required for the goldens, found {ort.__version__}")
    os.makedirs(OUT_DIR, exist_ok=True)
    rng = np.random.default_rng(SEED)
    weights = lstm_weights(rng, H, F, O)
    model = build_step_model(weights, H, F, O)
    onnx.checker.check_model(model, full_check=True)
    model_bytes = model.SerializeToString()
    with open(os.path.join(OUT_DIR, "lstm_h32.onnx"), "wb") as fh:
        fh.write(model_bytes)

    sess = session(model_bytes)
    lines = ["# instrument,step," + ",".join(FEATURES) + ",y"]
    state_lines = ["# instrument,tensor,values (H=32)"]
    max_np_diff = 0.0
    for inst in range(INSTRUMENTS):
        xs = synthetic_bars(rng, STEPS)
        h = np.zeros((1, 1, H), dtype=np.float32)
        c = np.zeros((1, 1, H), dtype=np.float32)
        hn = np.zeros(H)
        cn = np.zeros(H)
        for t in range(STEPS):
            x = xs[t].reshape(1, 1, F)
            y, h, c = sess.run(["y", "h_out", "c_out"], {"x": x, "h_in": h, "c_in": c})
            yn, hn, cn = numpy_lstm_step(weights, xs[t].astype(np.float64), hn, cn)
            max_np_diff = max(
                max_np_diff,
                float(np.max(np.abs(y.ravel() - yn))),
                float(np.max(np.abs(h.ravel() - hn))),
                float(np.max(np.abs(c.ravel() - cn))),
            )
            lines.append(
                ",".join([str(inst), str(t)] + [fmt(v) for v in xs[t]] + [fmt(y.ravel()[0])])
            )
        state_lines.append(f"{inst},h," + ",".join(fmt(v) for v in h.ravel()))
        state_lines.append(f"{inst},c," + ",".join(fmt(v) for v in c.ravel()))
    if max_np_diff > 1e-5:
        sys.exit(f"onnxruntime and the numpy LSTM disagree by {max_np_diff:.3e}")
    with open(os.path.join(OUT_DIR, "lstm_h32_golden.csv"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT_DIR, "lstm_h32_final_state.csv"), "w") as fh:
        fh.write("\n".join(state_lines) + "\n")

    # Refusal fixtures are kept small (H=8) where the hidden size does not matter.
    small = lstm_weights(np.random.default_rng(SEED + 1), 8, F, O)
    variants = {
        "bad_missing_c_in.onnx": build_step_model(small, 8, F, O, with_c_in=False),
        "bad_f64_input.onnx": build_step_model(small, 8, F, O, elem=TensorProto.DOUBLE),
        "bad_h_in_width.onnx": build_step_model(small, 8, F, O, h_in_dim=6),
        "bad_feature_count.onnx": build_step_model(small, 8, F, O, features=FEATURES[:3]),
        "bad_window_model.onnx": build_window_model(small, 8, F, O, window=16),
        "no_metadata_h8.onnx": build_step_model(small, 8, F, O, features=None),
    }
    nan_w = [a.copy() for a in small]
    nan_w[1][0, 5, 3] = np.nan
    variants["bad_nan_weights.onnx"] = build_step_model(nan_w, 8, F, O)
    for name, m in variants.items():
        with open(os.path.join(OUT_DIR, name), "wb") as fh:
            fh.write(m.SerializeToString())
    with open(os.path.join(OUT_DIR, "bad_truncated.onnx"), "wb") as fh:
        fh.write(model_bytes[: len(model_bytes) // 2])
    print(f"wrote fixtures to {os.path.normpath(OUT_DIR)}; numpy check max abs diff {max_np_diff:.3e}")


if __name__ == "__main__":
    main()
