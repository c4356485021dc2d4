"""A small MLP trained on scikit-learn's 8x8 digits and saved as a model directory, for tests
that run the command lines (evaluation, certification) on a real saved model in seconds."""
import jax.numpy as jnp
import optax
from flax import nnx

from jax_abstain import data, losses, models

OPTIONS = {"in_features": 64, "hidden": (32,), "num_classes": 10}


def train_and_save(directory, *, steps: int = 150, seed: int = 0, num_classes: int = 10):
  """Full-batch Adam on the digits training split; returns the model directory.

  With ``num_classes`` < 10 the head is smaller than the label range (for bad-input tests);
  ``steps=0`` saves the freshly initialised model.
  """
  options = {**OPTIONS, "num_classes": num_classes}
  net = models.create("mlp", seed=seed, **options)
  if not steps:
    net.eval()
    return models.save(net, directory, arch="mlp", options=options)
  x, y = data.load("digits", "train")
  x, y = jnp.asarray(x), jnp.asarray(y % num_classes)
  opt = nnx.Optimizer(net, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(net, opt):
    loss, grads = nnx.value_and_grad(lambda m: losses.cross_entropy(m(x), y).mean())(net)
    opt.update(net, grads)
    return loss

  for _ in range(steps):
    step(net, opt)
  net.eval()
  return models.save(net, directory, arch="mlp", options=options)
