r"""How much one device holds when a model is split: parameters and Adam's slots
on the fullest device, for the MNIST net and BigModel, whole and in 2 and 4
pipeline stages or tensor-parallel shards.

    python benchmarks/model_parallel.py      # about 15 s on a 2-core CPU

    # How much the pipeline's stages overlap, from a run's profile:
    python -m recipes.mnist --pipeline_stages=2 --num_microbatches=4 --batch_size=256 \
        --train_steps=40 --steps_per_loop=10 --profile --model_dir=runs/pipeline
    python benchmarks/model_parallel.py --overlap=runs/pipeline/logs

It builds each split on logical CPU devices (or GPUs, when there are 4) and reads
`strategies.model_parallel.memory_by_device`, the figures a run writes to
metrics.json. Bytes, not time: logical CPUs share the same cores, so a split run
here proves placement and equality, not speed.
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from strategies import model_parallel, tensor_parallel  # noqa: E402

DEVICES = model_parallel.devices(4)  # Before TensorFlow starts: the CPU is split here.

import keras  # noqa: E402

import models  # noqa: E402

MODELS = {"MNIST net": models.mnist_dense, "BigModel": models.BigModel}


def fullest(build, mode, count):
    """(bytes on the fullest device, bytes in all) for the model split `count` ways."""
    model = build()
    model.build((None, 28, 28))
    if count > 1 and mode == "pipeline":
        model_parallel.Pipeline(model, DEVICES[:count], input_shape=(28, 28), balance="params")
    elif count > 1:
        model = tensor_parallel.TensorParallel(model, DEVICES[:count], input_shape=(28, 28)).model
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    usage = model_parallel.memory_by_device(model, optimizer)
    totals = [entry["parameter_bytes"] + entry["optimizer_bytes"] for entry in usage.values()]
    return max(totals), sum(totals)


def overlap(logs):
    """The share of the time XLA computations ran in the profiled loop during which
    two or more ran at once (stage s of one micro-batch beside stage s+1 of another)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    path = sorted(glob.glob(os.path.join(logs, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space.ParseFromString(open(path, "rb").read())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    edges = []
    for line in host.lines:
        for event in line.events:
            if host.event_metadata[event.metadata_id].name == "CpuExecutable::ExecuteAsyncOnStream":
                start = line.timestamp_ns * 1000 + event.offset_ps
                edges += [(start, 1), (start + event.duration_ps, -1)]
    running = busy = together = 0
    last = edges and min(edges)[0]
    for time, change in sorted(edges):
        busy += (time - last) if running else 0
        together += (time - last) if running >= 2 else 0
        running, last = running + change, time
    print(
        f"{path}: {len(edges) // 2} XLA executions, {busy / 1e9:.1f} ms running, "
        f"{together / 1e9:.1f} ms ({together / max(busy, 1):.0%}) with two or more at once"
    )


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("--overlap="):
        return overlap(sys.argv[1].split("=", 1)[1])
    print("| model | whole: one device | 2 stages | 4 stages | 2 shards | 4 shards |")
    print("|---|---|---|---|---|---|")
    for name, build in MODELS.items():
        whole, _ = fullest(build, "pipeline", 1)
        cells = [f"{whole:,} B"]
        for mode in ("pipeline", "tensor"):
            for count in (2, 4):
                try:
                    most, total = fullest(build, mode, count)
                except ValueError as e:  # The MNIST net has 3 layers with weights.
                    cells.append(f"- ({str(e).split(';')[0]})")
                    continue
                assert total == whole, (name, mode, count, total, whole)  # Nothing copied.
                cells.append(f"{most:,} B ({most / whole:.0%})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
