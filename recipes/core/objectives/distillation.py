"""Knowledge distillation in the package's own step, with Keras' distillation loss.

    objective = distillation.Distillation(teacher, temperature=4.0, alpha=0.5)
    train.train_model(train.Task("distill", build_student, objective), data, config=config)

The student's per-example loss is `(1 - alpha) * CE(y, student) + alpha * D`,
where D is `keras.distillation.LogitsDistillation`: the KL divergence between
the teacher's and the student's softmax at temperature T, times T². A binary
model (one sigmoid unit, logit z) is the two-class softmax over (0, z), so the same
term is the KL between the two Bernoulli distributions at T. Both come
from logits (`models.logits`: the heads' kernels and biases), never from the log
of probabilities. The teacher runs inside the same compiled step, in inference
mode, frozen and outside the gradient.

Two Keras 3.15 pitfalls are worked around (see `Distillation.__init__`):
`LogitsDistillation()` with its default loss computes no softmax, and a Keras
loss with its default reduction divides itself by the number of replicas
inside a replica context. Keras' own `Distiller.compute_loss` skips the cross-replica loss scaling, so
under MirroredStrategy with 2 replicas its loss doubles (one SGD step moved the
weights 1.83-1.93x as far as on one device). Here only Keras' loss term is used,
and the step's global-batch scaling is applied once, as for every objective.
"""

import math

import keras
import tensorflow as tf

import models
from recipes.core.deploy import compression
from recipes.core.errors import RecipeError
from recipes.core.rundir import run_dir
from recipes.core.training import step

# Hinton et al. soften with T from 1 to 20. Far above, the softened probabilities are
# so near uniform that float32 rounding is most of the term, and T^2 scales it up.
MAX_TEMPERATURE = 100.0


def temperature_ok(temperature):
    """Whether `temperature` is a softmax temperature the teacher's term can take:
    finite, above 0 and at most `MAX_TEMPERATURE` (beyond, rounding is most of the term)."""
    return math.isfinite(temperature) and 0 < temperature <= MAX_TEMPERATURE


class Distillation(step.Objective):
    """The student's hard-label loss from its logits, plus `alpha` times Keras'
    `LogitsDistillation` from a frozen `teacher` (None: the student alone).

    In evaluation the loss is the hard-label cross-entropy alone, so that a
    distilled student's test loss compares with a baseline's.

    Args:
      teacher: a trained Keras classifier ending in a softmax (or, for a binary task,
        one sigmoid unit, as the student), or None.
      temperature: the softmax temperature T of the teacher's term (> 0).
      alpha: the weight of the teacher's term, in [0, 1].
    """

    def __init__(self, teacher=None, temperature=3.0, alpha=0.5):
        if not temperature_ok(temperature):
            raise ValueError(
                f"`temperature` must be in (0, {MAX_TEMPERATURE:g}]. Received: temperature={temperature}"
            )
        if not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
        super().__init__(keras.losses.sparse_categorical_crossentropy)
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        # A KLDivergence *instance*: Keras 3.15's default, the string "kl_divergence",
        # resolves to the bare function, which skips LogitsDistillation's softmax and
        # T^2 branch and takes the KL of the raw logits, clipped to [1e-7, 1], instead.
        # reduction=None: with its default reduction a Keras loss divides itself by the
        # number of replicas inside a replica context (keras/src/losses/loss.py,
        # scale_loss_for_distribution), for Keras' own trainer to undo; the step here
        # scales by the global batch itself.
        self.teacher_term = self._teacher_term(tf.float32)
        if teacher is not None:
            teacher.trainable = False

    def _teacher_term(self, dtype):
        # dtype: a Keras loss computes in the float type it is given (default float32),
        # so a float64 run's teacher term stays float64.
        return keras.distillation.LogitsDistillation(
            temperature=self.temperature, loss=keras.losses.KLDivergence(reduction=None, dtype=dtype)
        )

    def forward(self, model, x, training):
        return _probabilities(self.student_logits(model, x, training))

    def student_logits(self, model, x, training):
        """The student's logits, float16 and bfloat16 as float32, float64 as float64."""
        return step.widened(models.logits(model, x, training=training))

    def loss(self, model, x, y, training):
        logits = self.student_logits(model, x, training)
        if _binary(logits):  # Float 0/1 labels [N, 1], as the binary recipes take.
            hard = keras.losses.binary_crossentropy(tf.cast(y, logits.dtype), logits, from_logits=True)
        else:
            hard = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        if not training or self.teacher is None:
            return hard, _probabilities(logits)
        teacher_logits = models.logits(self.teacher, x, training=False)
        teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, logits.dtype))
        term = self.teacher_term if logits.dtype == tf.float32 else self._teacher_term(logits.dtype)
        # Keras' term is the mean over this replica's examples. Given to every example,
        # the step's sum over the replicas' examples / global batch makes it the mean
        # over the global batch, as the hard term is: no second scaling.
        soft = term.compute_loss(_as_softmax_logits(teacher_logits), _as_softmax_logits(logits))
        return (1.0 - self.alpha) * hard + self.alpha * soft, _probabilities(logits)


def _binary(logits):
    return logits.shape[-1] == 1


def _probabilities(logits):
    """What the model's head outputs: a sigmoid of one logit, else a softmax."""
    return tf.sigmoid(logits) if _binary(logits) else tf.nn.softmax(logits)


def _as_softmax_logits(logits):
    """One sigmoid logit z as the two-class softmax logits (0, z): softmax((0, z)) is
    (1 - sigmoid(z), sigmoid(z)), so Keras' softmax term takes a binary model as is."""
    return tf.concat([tf.zeros_like(logits), logits], axis=-1) if _binary(logits) else logits


def teacher_source(teacher, step_count):
    """What a distilled student comes from, for its metrics.json and its resume check:
    `{"teacher_step": step_count, "teacher_weights_sha256": ...}`, the fingerprint of the
    teacher's weights that compress records of its source too."""
    return {"teacher_step": step_count, "teacher_weights_sha256": compression.weights_fingerprint(teacher)}


def check_same_teacher(model_dir, source, teacher_dir):
    """A one-line `RecipeError` where `model_dir` holds checkpoints of a student
    distilled from another teacher than `source` (`teacher_source`): resuming it would
    pass off the old teacher's student as this one's."""
    recorded = run_dir.read_settings(model_dir)
    if recorded is None or recorded.get("recipe") != "distill":
        return  # Nothing to resume, or not a student: the run's own settings check says so.
    before = recorded.get("teacher_weights_sha256")
    if before == source["teacher_weights_sha256"]:
        return
    then = f"step {recorded.get('teacher_step')}, weights {before[:12]}" if before else "not recorded"
    now = f"step {source['teacher_step']}, weights {source['teacher_weights_sha256'][:12]}"
    raise RecipeError(
        f"the teacher {teacher_dir} changed since the student in {model_dir} was distilled "
        f"from it ({then} then; {now} now); pass a new --model_dir, or delete {model_dir} to start over"
    )
