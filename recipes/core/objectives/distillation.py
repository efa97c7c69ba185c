"""Knowledge distillation in the package's own step, with Keras' distillation loss.

    objective = distillation.Distillation(teacher, temperature=4.0, alpha=0.5)
    train.train_model(config, strategy, dataset, build_student, objective=objective, ...)

The student's per-example loss is `(1 - alpha) * CE(y, student) + alpha * D`,
where D is `keras.distillation.LogitsDistillation`: the KL divergence between
the teacher's and the student's softmax at temperature T, times T². Both come
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

import keras
import tensorflow as tf

import models
from recipes.core.training import step


class Distillation(step.Objective):
    """The student's hard-label loss from its logits, plus `alpha` times Keras'
    `LogitsDistillation` from a frozen `teacher` (None: the student alone).

    In evaluation the loss is the hard-label cross-entropy alone, so that a
    distilled student's test loss compares with a baseline's.

    Args:
      teacher: a trained Keras classifier ending in a softmax, or None.
      temperature: the softmax temperature T of the teacher's term (> 0).
      alpha: the weight of the teacher's term, in [0, 1].
    """

    def __init__(self, teacher=None, temperature=3.0, alpha=0.5):
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive. Received: temperature={temperature}")
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
        self.teacher_term = keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence(reduction=None)
        )
        if teacher is not None:
            teacher.trainable = False

    def forward(self, model, x, training):
        return tf.nn.softmax(self.student_logits(model, x, training))

    def student_logits(self, model, x, training):
        return tf.cast(models.logits(model, x, training=training), tf.float32)

    def loss(self, model, x, y, training):
        logits = self.student_logits(model, x, training)
        hard = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        if not training or self.teacher is None:
            return hard, tf.nn.softmax(logits)
        teacher_logits = tf.stop_gradient(tf.cast(models.logits(self.teacher, x, training=False), tf.float32))
        # Keras' term is the mean over this replica's examples. Given to every example,
        # the step's sum over the replicas' examples / global batch makes it the mean
        # over the global batch, as the hard term is: no second scaling.
        soft = self.teacher_term.compute_loss(teacher_logits, logits)
        return (1.0 - self.alpha) * hard + self.alpha * soft, tf.nn.softmax(logits)
