"""One model split over this host's devices, as the config asks
(`--pipeline_stages` or `--tensor_parallel`): the wrapper the step runs through
(`strategies.model_parallel.Pipeline`, `strategies.tensor_parallel.TensorParallel`)."""

import keras

import strategies
from models._keras_compat import all_layers
from recipes.core.errors import RecipeError, first_line
from recipes.core.training import step
from strategies import model_parallel, tensor_parallel


def split(config, strategy, model, data, objective):
    """`model` split over this host's devices as `config` asks: a
    `model_parallel.Pipeline` or `tensor_parallel.TensorParallel`, or None for one
    device. `objective` is the step's: a split trains the plain loss
    (`step.Objective`). Raises a one-line `RecipeError` for what cannot be split so."""
    if config.model_parallel == 1:
        return None
    flag, count = (
        ("pipeline_stages", config.pipeline_stages)
        if config.pipeline_stages > 1
        else ("tensor_parallel", config.tensor_parallel)
    )
    if strategies.name_of(strategy) != "default":
        raise RecipeError(
            f"{flag}={count} splits one model under the default strategy; "
            f"strategy={strategies.name_of(strategy)} with it is not supported yet"
        )
    if type(objective) is not step.Objective:
        raise RecipeError(
            f"{flag} trains with the recipe's plain loss, and this run's step "
            f"({type(objective).__name__}) does not take it yet; leave {flag} at 1"
        )
    input_shape = None if isinstance(model, keras.Sequential) else tuple(data.x_spec.shape)
    jit_compile = config.jit_compile
    if jit_compile and any(isinstance(layer, keras.layers.RNN) for layer in all_layers(model)):
        # An XLA-compiled stage cannot hand a recurrent layer's TensorList to the next
        # (UnimplementedError): the stages of a recurrent model run uncompiled.
        print(f"{flag}: the model is recurrent; its parts run without XLA.")
        jit_compile = False
    try:
        devices = model_parallel.devices(count)
        if flag == "pipeline_stages":
            parallel = model_parallel.Pipeline(
                model, devices, config.num_microbatches, config.pipeline_balance, input_shape, jit_compile
            )
            print(
                f"Pipeline: {count} stages balancing {config.pipeline_balance}, "
                f"{config.num_microbatches} micro-batch(es) per batch; " + "; ".join(parallel.describe())
            )
        else:
            parallel = tensor_parallel.TensorParallel(
                model, devices, input_shape, jit_compile, input_dtype=data.x_spec.dtype.name
            )
            print("Tensor parallel: " + "; ".join(parallel.describe()))
    except ValueError as e:
        raise RecipeError(f"{flag}={count}: {first_line(e)}") from None
    return parallel


def objective(objective, parallel):
    """The step's objective for a model split by `split`: a pipeline's forward pass
    calls its stages (a tensor-parallel model is called as it is)."""
    if parallel is None or parallel.forward is None:
        return objective
    return step.Objective(objective.loss_fn, forward=parallel.forward)
