"""The GPT: the model and its key/value cache, generation, the recipe's run and its
export, and bad input as one line each.

The text is real and ships with Python: the Python Language Reference's topics.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from recipes.core.input import samples
from recipes.core.nlp import generation, language
from tests.helpers import run_module, run_python


def _gpt(vocab_size=40, max_length=32, dtype="float32", **sizes):
    """A small GPT whose every layer computes in `dtype` (the Keras policy it is built under)."""
    sizes = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, **sizes}
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(dtype)
    try:
        model = models.GPT(vocab_size, max_length, **sizes)
        model.build((None, None))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-9), ("float32", 1e-5)])
def test_cached_decode_steps_give_the_full_forward_logits(dtype, tolerance):
    model = _gpt(dtype=dtype)
    ids = np.random.default_rng(0).integers(0, 40, (3, 20)).astype(np.int32)
    full = keras.ops.convert_to_numpy(model(ids))
    logits, cache = model.prefill(ids[:, :7])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits), full[:, :7], atol=tolerance, rtol=0)
    for t in range(7, 20):
        logits, cache = model.decode(ids[:, t : t + 1], cache, t)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(logits)[:, 0], full[:, t], atol=tolerance, rtol=0
        )


def test_attention_is_causal_and_the_head_is_tied_to_the_embedding():
    model = _gpt()
    ids = np.random.default_rng(1).integers(0, 40, (2, 16)).astype(np.int32)
    changed = ids.copy()
    changed[:, 10:] = (changed[:, 10:] + 1) % 40
    np.testing.assert_allclose(model(ids)[:, :10], model(changed)[:, :10], atol=1e-6)  # The past only.
    assert not np.allclose(model(ids)[:, 10:], model(changed)[:, 10:])
    vocabulary_sized = [v.path.partition("/")[2] for v in model.weights if 40 in v.shape]
    assert vocabulary_sized == ["embedding/token_embedding/embeddings"]  # No output matrix of its own.
    np.testing.assert_allclose(models.logits(model, ids), model(ids))


def test_the_config_round_trips_and_the_model_loads_from_model_keras(tmp_path):
    model = _gpt(dropout_rate=0.1, intermediate_size=48)
    restored = models.GPT.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
    model.save(tmp_path / "gpt.keras")
    loaded = keras.saving.load_model(tmp_path / "gpt.keras")
    ids = np.arange(12, dtype=np.int32)[None] % 40
    np.testing.assert_allclose(loaded(ids), model(ids), atol=1e-6)
    with pytest.raises(ValueError, match="`num_heads` must divide `hidden_size`"):
        models.GPT(40, 32, hidden_size=30, num_heads=4)


VOCABULARY = language.Vocabulary(tuple(range(32, 127)) + (10,))


def _sorted_vocabulary():
    return language.Vocabulary(tuple(sorted(VOCABULARY.byte_values)))


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=0), dict(temperature=1.0, top_k=10, top_p=0.9, seed=3), dict(beam_width=3)],
    ids=["greedy", "sampled", "beam"],
)
def test_generation_is_the_same_with_and_without_the_cache_across_context_slides(settings):
    """256 tokens from a context of 32: the context fills and slides many times."""
    vocabulary = _sorted_vocabulary()
    model = _gpt(vocab_size=vocabulary.size, dtype="float64")
    count = 64 if "beam_width" in settings else 256
    sampling = generation.Sampling(**settings)
    cached = generation.Generator(model, vocabulary).generate("Hello", count, sampling)
    recomputed = generation.Generator(model, vocabulary, kv_cache=False).generate("Hello", count, sampling)
    assert cached == recomputed and len(cached.encode()) == count


def test_sampling_is_seeded_and_restricted_to_top_k_and_top_p():
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.15, 0.05]] * 2000))
    draw = lambda **s: generation.choose(
        logits,
        s.get("t", 1.0),
        s.get("k", 0),
        s.get("p", 1.0),  # noqa: E731
        tf.constant([7, 0], tf.int64),
    ).numpy()
    np.testing.assert_array_equal(draw(), draw())
    assert set(draw(k=2)) == {0, 1} and set(draw(p=0.7)) == {0, 1} and set(draw(p=0.85)) == {0, 1, 2}
    assert set(draw(t=0)) == {0}
    np.testing.assert_allclose(np.bincount(draw(), minlength=4) / 2000, [0.5, 0.3, 0.15, 0.05], atol=0.04)


def test_stop_strings_cut_the_text_and_streaming_passes_it_on_in_order():
    vocabulary = _sorted_vocabulary()
    model = _gpt(vocab_size=vocabulary.size)
    generator = generation.Generator(model, vocabulary)
    sampling = generation.Sampling(temperature=1.0, seed=5)
    full = generator.generate("ab", 200, sampling)
    stop = full[40:42]
    pieces = []
    cut = generator.generate("ab", 200, sampling, stop=stop, on_text=pieces.append)
    assert cut == full[: full.index(stop)] and "".join(pieces) == cut


def test_the_ngram_baselines_are_cross_entropies_of_held_out_counts(tmp_path):
    from recipes.core.input import data

    (tmp_path / "t.txt").write_text("ab" * 1200)
    opened = data.open_data(str(tmp_path / "t.txt"), text_window=8)
    vocabulary = language.Vocabulary.of_files([str(tmp_path / "t.txt")])
    baselines = language.ngram_baselines(language.in_vocabulary(opened, vocabulary), vocabulary)
    assert vocabulary.byte_values == (ord("a"), ord("b")) and vocabulary.bytes_per_character == 1.0
    assert abs(baselines["unigram"] - np.log(2)) < 0.01  # a and b equally often.
    assert baselines["bigram"] < 0.01  # b always follows a, and a b.


def test_strided_held_out_windows_score_every_held_out_character_once_with_long_context(tmp_path):
    from recipes.core.input import corpus, pipeline

    text = bytes(np.random.default_rng(0).integers(32, 127, 5000, dtype=np.uint8))
    (tmp_path / "t.txt").write_bytes(text)
    window, stride = 16, 4
    test = corpus.open_text([str(tmp_path / "t.txt")], window, stride=stride)["test"]
    cut = int(len(text) * 0.9)
    scored = []
    records = pipeline.records(pipeline.Split(test), shuffle=False).batch(64).map(lambda _, example: example)
    for x, y in records.as_numpy_iterator():
        for k, (xs, ys) in enumerate(zip(x, y), start=len(scored) // stride):
            first = cut - (window - stride) + k * stride  # Context from before the cut.
            assert bytes(xs.astype(np.uint8)) == text[first : first + window]
            assert (ys[: window - stride] == -1).all()  # Context only: never scored.
            end = first + window + 1
            assert bytes(ys[window - stride :].astype(np.uint8)) == text[end - stride : end]
            scored += range(first + window - stride + 1, first + window + 1)
    # Every held-out character after the first, once, each after 12 to 15 characters.
    assert scored == list(range(cut + 1, cut + 1 + len(scored))) and len(text) - scored[-1] - 1 < stride


# The recipe, end to end, small.

SMALL = [
    "--num_layers=2",
    "--num_heads=2",
    "--hidden_size=32",
    "--max_length=32",
    "--train_steps=150",
    "--warmup_steps=10",
    "--sample_length=20",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("gpt") / "run"
    done = run_module("recipes.gpt", f"--model_dir={model_dir}", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    return model_dir, done.stdout


@pytest.mark.slow
def test_the_recipe_reports_per_character_losses_against_the_baselines(trained):
    model_dir, stdout = trained
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["recipe"] == "gpt" and metrics["data"] == "sample:python_reference"
    text = open(samples.reference_text_file(), "rb").read()
    assert metrics["vocabulary"] == sorted(set(text))
    assert metrics["test_loss"] < metrics["unigram_test_loss"]  # Even 60 steps beat character counts.
    # Held-out windows of 32 start every 16 characters, the first 16 before the cut.
    assert metrics["num_test_examples"] == (len(text) - int(len(text) * 0.9) + 16 - 33) // 16 + 1
    assert "nats/char" in stdout and "bits/char" in stdout and "training tokens/s" in stdout


@pytest.mark.slow
def test_the_exported_generate_runs_without_the_package_and_matches_greedy_generate(trained):
    model_dir, _ = trained
    done = run_module(
        "recipes.generate",
        f"--model_dir={model_dir}",
        "--prompt=The ",
        "--temperature=0",
        "--max_new_tokens=80",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = done.stdout[len("The ") :]  # The prompt, then the text, as it streamed.
    # (With and without the cache the tokens are the same in float64: the test above. In
    # float32 the compiled decode step rounds unlike the full pass, so a near-tie may not.)
    code = f"""
import json
import sys
for name in ("recipes", "models", "keras"):  # Plain TensorFlow only.
    sys.modules[name] = None
import tensorflow as tf
loaded = tf.saved_model.load({str(model_dir / "saved_model")!r})
out = loaded.signatures["generate"](prompt=tf.constant("The "), max_new_tokens=tf.constant(80),
    temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0, tf.int64))
probabilities = loaded.signatures["serving_default"](inputs=tf.constant([[5, 6, 7]]))["probabilities"]
print(json.dumps({{"text": out["text"].numpy().decode(), "total": float(tf.reduce_sum(probabilities))}}))
"""
    exported = json.loads(run_python(code).splitlines()[-1])
    assert exported["text"] == ours and len(ours.encode()) == 80
    assert abs(exported["total"] - 1) < 1e-4


# Bad input: one `error:` line each, nothing written.

BAD_INPUT = [
    ("gpt", ["--data={empty}"], "too little text"),
    ("gpt", ["--data={one_character}"], "too little text"),
    ("gpt", ["--data={one_kind}"], "holds 1 distinct character"),
    ("generate", ["--prompt=\u00e9t\u00e9"], "the model never saw"),
    ("generate", ["--prompt="], "the prompt is empty"),
    ("generate", ["--prompt=a", "--max_new_tokens=0"], "--max_new_tokens must be at least 1"),
    ("generate", ["--prompt=a", "--temperature=-1"], "--temperature must be 0 (greedy) or positive"),
    ("generate", ["--prompt=a", "--top_p=0"], "--top_p must be in (0, 1]"),
    ("generate", ["--prompt=a", "--top_p=1.5"], "--top_p must be in (0, 1]"),
    ("generate", ["--prompt=a", "--top_k=100000"], "--top_k must be between 0"),
    ("generate", ["--prompt=a", "--beam_width=0"], "--beam_width must be at least 1"),
    ("generate", ["--max_new_tokens=5"], "pass --prompt=TEXT"),
    ("generate", ["--prompt=a", "--model_dir={not_gpt}"], "not a GPT"),
    ("generate", ["--prompt=a", "--model_dir={nothing}"], None),
]


@pytest.fixture(scope="module")
def bad_text(tmp_path_factory, trained):
    root = tmp_path_factory.mktemp("bad_text")
    (root / "empty.txt").write_text("")
    (root / "one_character.txt").write_text("x")
    (root / "one_kind.txt").write_text("z" * 5000)
    (root / "nothing").mkdir()
    not_gpt = root / "not_gpt"
    not_gpt.mkdir()
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    (not_gpt / "metrics.json").write_text(json.dumps({**metrics, "recipe": "mnist", "vocabulary": None}))
    paths = {name: str(root / f"{name}.txt") for name in ("empty", "one_character", "one_kind")}
    return {**paths, "nothing": str(root / "nothing"), "not_gpt": str(not_gpt), "model_dir": str(trained[0])}


@pytest.mark.slow
@pytest.mark.parametrize("command,flags,expected", BAD_INPUT, ids=[" ".join(c[1]) for c in BAD_INPUT])
def test_bad_input_is_one_error_line(command, flags, expected, bad_text, tmp_path, monkeypatch, capfd):
    import importlib

    from tests.helpers import assert_one_error_line, run_in_process

    module = importlib.import_module(f"recipes.{command}")
    args = [flag.format(**bad_text) for flag in flags]
    if command == "generate" and not any(a.startswith("--model_dir") for a in args):
        args.append(f"--model_dir={bad_text['model_dir']}")
    if command == "gpt":
        args += [f"--model_dir={tmp_path / 'run'}", *SMALL]
    code, out, err = run_in_process(module, args, monkeypatch, capfd)
    if expected is None:  # A directory without a run: the run reader's own line.
        assert code == 1 and len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    else:
        assert_one_error_line(code, err, expected)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_warns_and_continues_from_its_end(trained):
    model_dir, _ = trained
    prompt = "x = 1\n" * 20  # 120 characters for a context of 32.
    done = run_module(
        "recipes.generate",
        f"--model_dir={model_dir}",
        f"--prompt={prompt}",
        "--temperature=0",
        "--max_new_tokens=10",
    )
    assert done.returncode == 0 and "warning: the prompt's 120 characters are more than" in done.stderr
    short = run_module(
        "recipes.generate",
        f"--model_dir={model_dir}",
        f"--prompt={prompt[-32:]}",
        "--temperature=0",
        "--max_new_tokens=10",
    )
    assert done.stdout[len(prompt) :] == short.stdout[32:]


def test_gpt_flags_are_the_recipe_defaults_of_nanogpt():
    from recipes import bert, gpt  # Both: their shared flags are defined once.
    from recipes.core.cli import flags as recipe_flags
    from tests.helpers import parse_recipe_command

    parse_recipe_command(["python", "-m", "recipes.gpt"])
    assert recipe_flags.transformer_sizes("gpt") == dict(
        num_layers=4, num_heads=4, hidden_size=128, max_length=64
    )
    assert recipe_flags.transformer_sizes("bert")["num_layers"] == 2 and bert.RECIPE_DEFAULTS

    assert gpt.RECIPE_DEFAULTS == dict(
        batch_size=12,
        train_steps=2000,
        optimizer="adamw",
        learning_rate=1e-3,
        lr_schedule="cosine",
        min_learning_rate=1e-4,
        warmup_steps=100,
        weight_decay=0.1,
        beta_2=0.99,
        global_clipnorm=1.0,
        dropout_rate=0.0,
    )


# Every strategy and split: the same weights as one device (float64).

_EXACT = [
    "--num_layers=2",
    "--num_heads=2",
    "--hidden_size=32",
    "--max_length=32",
    "--train_steps=20",
    "--warmup_steps=5",
    "--sample_length=0",
    "--mixed_precision=float64",
    "--seed=3",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "split",
    [
        ["--strategy=mirrored", "--num_cpu_devices=2", "--nojit_compile"],
        ["--pipeline_stages=2"],
        ["--tensor_parallel=2"],
    ],
    ids=["mirrored", "pipeline", "tensor"],
)
def test_a_split_or_mirrored_gpt_ends_with_the_one_device_weights(split, tmp_path, monkeypatch, capfd):
    """With the recipe's global clipping and AdamW on: the clip sees the whole
    batch's gradient, the tied embedding's included, however it is split."""
    import recipes.gpt
    from tests.helpers import run_in_process

    weights = {}
    for name, args in (("default", ["--nojit_compile"]), ("split", split)):
        try:
            code, out, err = run_in_process(
                recipes.gpt, [f"--model_dir={tmp_path / name}", *_EXACT, *args], monkeypatch, capfd
            )
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert code == 0, err[-3000:]
        weights[name] = keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
    if "--tensor_parallel=2" in split:
        assert "2 heads and an MLP of 128 split over 2 devices" in out
    assert len(weights["split"]) == len(weights["default"])
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(weights["split"], weights["default"])) < 1e-9


# Smaller and adapted: int8 and LoRA.


@pytest.mark.slow
def test_int8_costs_at_most_five_hundredths_of_a_nat_and_generates(trained):
    from recipes.core.input import data

    model, vocabulary = language.load_run(str(trained[0]))
    opened = data.open_data("sample:python_reference", text_window=32, text_stride=16)  # As the recipe.
    opened = language.in_vocabulary(opened, vocabulary)
    float_loss = language.held_out_loss(model, opened.test)
    int8 = language.quantized(model)
    assert sum(1 for v in int8.weights if v.dtype == "int8") == 6 * 2  # Every projection of 2 blocks.
    assert abs(language.held_out_loss(int8, opened.test) - float_loss) <= 0.05
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    assert abs(float_loss - metrics["test_loss"]) < 1e-4
    text = generation.Generator(int8, vocabulary).generate("The ", 30, generation.Sampling(temperature=0))
    assert len(text.encode()) == 30


def test_lora_trains_under_two_percent_of_the_recipes_gpt():
    from recipes import gpt

    base = _gpt(vocab_size=107, max_length=64, hidden_size=128, num_layers=4, num_heads=4)
    model = gpt.fine_tuned(base, lora_rank=3)  # Keras' per-head adapters: 0.51% of the model per rank.
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert all("lora" in v.name for v in model.trainable_variables)
    assert 0 < trainable <= 0.02 * model.count_params()
    ids = np.arange(64, dtype=np.int32)[None] % 107
    np.testing.assert_allclose(model(ids), base(ids), atol=1e-5)  # B starts at zero: the same model.


@pytest.mark.slow
def test_lora_trains_only_its_adapters_and_fine_tuning_lowers_the_loss_of_a_new_text(trained, tmp_path):
    """The standard library's argparse source as the new text (in the run's characters)."""
    import argparse
    import inspect

    vocabulary = set(json.loads((trained[0] / "metrics.json").read_text())["vocabulary"])
    source = inspect.getsource(argparse).encode()
    (tmp_path / "new.txt").write_bytes(bytes(b for b in source if b in vocabulary))
    for name, extra in (("lora", ["--lora_rank=4"]), ("full", [])):
        done = run_module(
            "recipes.gpt",
            f"--data={tmp_path / 'new.txt'}",
            f"--init_from={trained[0]}",
            f"--model_dir={tmp_path / name}",
            "--train_steps=60",
            "--warmup_steps=5",
            "--learning_rate=3e-3",
            "--sample_length=0",
            *extra,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert full["test_loss"] < full["pretrained_test_loss"] - 0.05
    lora = json.loads((tmp_path / "lora" / "metrics.json").read_text())
    assert lora["lora_rank"] == 4 and lora["test_loss"] < lora["pretrained_test_loss"]
    base, _ = language.load_run(str(trained[0]))
    adapted, _ = language.load_run(str(tmp_path / "lora"))
    ours = {v.path.partition("/")[2]: v.numpy() for v in base.weights}
    merged = 0
    for variable in adapted.weights:  # Keras saves the adapters merged into their kernels.
        path = variable.path.partition("/")[2]
        if "lora" in variable.name:
            continue
        if path.endswith(("attention/query/kernel", "attention/value/kernel")):
            merged += 1
            assert not np.array_equal(variable.numpy(), ours[path])
        else:  # Everything else was frozen.
            np.testing.assert_array_equal(variable.numpy(), ours[path])
    assert merged == 2 * 2  # Query and value, in each of the 2 blocks.
    assert lora["trainable_params"] == sum(int(np.prod(v.shape)) for v in adapted.weights if "lora" in v.name)
    done = run_module(
        "recipes.generate",
        f"--model_dir={tmp_path / 'lora'}",
        "--prompt=def ",
        "--max_new_tokens=20",
        "--quantize=int8",
    )
    assert done.returncode == 0, done.stderr[-3000:]
