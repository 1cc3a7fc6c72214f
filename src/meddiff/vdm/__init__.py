"""Medical VDM (Rguibi et al. 2023), i.e. the variational diffusion model of Kingma et al. (2021)
in PyTorch: continuous-time variance-preserving diffusion with a (learnable) gamma(t), the
negative VLB in three terms, ancestral sampling over any number of steps.

    schedule.py   gamma(t) = log(sigma_t^2/alpha_t^2): fixed linear, learned endpoints, monotone noise net
    loss.py       reconstruction, latent (prior KL), diffusion (continuous / finite T), antithetic
                  times, bits/dim, backward_vlb (schedule shape trained on the variance)
    networks.py   ScoreNet (the paper's FiLM ResNet), UNetScore (meddiff's U-Net), level and ResNet
                  encoder/decoder pairs, VDMModel (holds the parts for one state_dict)
    vlb.py        model_vlb: one batch -> VLBTerms (VDMObjective, the VDM under the training loop: meddiff.objectives.vdm);
                  label_drop (classifier-free guidance's label dropout, per global position)
    sampling.py   sample_z0 (ancestral), decode_levels, guided_score (classifier-free guidance), VDMDenoiser
                  (meddiff's samplers on a VDM, on a discrete grid of T times or on its own continuous times),
                  continuous_grid
    checkpoint.py load_vdm (format "meddiff-vdm-v1", read through meddiff.checkpointing)

Design note: the VDM under the trainer (as wired in meddiff.objectives.vdm, VDMObjective)
-------------------------------------------------------------------------------
- Build: a config section (e.g. ``vdm:``) names the gamma ("fixed_linear" | "learned_linear" |
  "learned_nnet", gamma_min/max), the score network ("scorenet" with embedding_dim/n_layers, or
  "unet" reusing ``model:`` and build_unet with in_channels = 1 + condition channels), the
  encoder/decoder ("levels" default, or "resnet" with z_dim/hidden/n_layers/vocab), vocab_size
  (256), n_classes, timesteps (0 = continuous) and antithetic (true). It builds one VDMModel;
  the trainer's ``self.net`` is that VDMModel (EMA, DDP, AdamW over all its parameters,
  gamma's included).
- Step: ``x = to_levels(batch.x0)``; ``terms = model_vlb(net, x, labels=..., image_cond=cond,
  noise=(t, eps, eps_0))`` with the noise drawn per step from the loop's seeded generator (the
  antithetic offset is per batch, so with DDP each rank draws its own offset); then
  ``bpd = backward_vlb(terms, net.gamma)`` replaces ``loss.backward()`` (it must come right after
  ``opt.zero_grad``, since it overwrites the shape parameters' gradients), then clip/step/EMA
  as now. Log bpd["reconstruction"], bpd["latent"], bpd["diffusion"], bpd["total"]; validation
  = the same with the EMA model under no_grad (gamma' is still taken by autograd inside).
- Checkpoint: ``net.state_dict()`` already holds the gamma parameters (gamma.b, gamma.w and the
  noise net's l1/l2/l3, or the fixed buffers gamma_min/gamma_max), the score network, the
  encoder/decoder and the class embedding; the file must also record the format
  ("meddiff-vdm-v1"), vocab_size, data shape (for ResNet encoders), n_classes and the resolved
  config, and loading must refuse a DDPM checkpoint (and vice versa).
- Sampling: ``sample_z0(net.score, net.gamma, shape, steps=N, generators=...)`` then
  ``decode_levels(net.decoder.logits(z0 / alpha(g0), g0))``; or the existing samplers through
  ``VDMDenoiser.from_gamma(net.score, net.gamma, T)`` (a grid of T times) or
  ``VDMDenoiser.continuous(net.score, net.gamma)`` (its own times, ``denoiser.time_grid(steps)``).
"""

from .loss import (VLBTerms, antithetic_times, backward_vlb, bits_per_dim, diffusion_loss_continuous,
                   diffusion_loss_discrete, latent_loss, reconstruction_loss, vlb_terms)
from .networks import (NO_CLASS, LevelDecoder, LevelEncoder, ResNetDecoder, ResNetEncoder, ScoreNet, UNetScore,
                       VDMModel, to_levels)
from .vlb import draw_noise, label_drop, model_vlb
from .sampling import VDMDenoiser, decode_levels, discrete_schedule, guided_eps, guided_score, sample_z0
from .schedule import (FixedLinearGamma, LearnedLinearGamma, NoiseNetGamma, alpha, alpha2, build_gamma,
                       gamma_and_derivative, sigma, sigma2, snr)

__all__ = [
    "VLBTerms", "antithetic_times", "backward_vlb", "bits_per_dim", "diffusion_loss_continuous",
    "diffusion_loss_discrete", "latent_loss", "reconstruction_loss", "vlb_terms",
    "LevelDecoder", "LevelEncoder", "ResNetDecoder", "ResNetEncoder", "ScoreNet", "UNetScore", "VDMModel", "to_levels",
    "NO_CLASS", "draw_noise", "label_drop", "model_vlb", "VDMDenoiser", "decode_levels", "discrete_schedule",
    "guided_eps", "guided_score", "sample_z0",
    "FixedLinearGamma", "LearnedLinearGamma", "NoiseNetGamma", "alpha", "alpha2", "build_gamma",
    "gamma_and_derivative", "sigma", "sigma2", "snr",
]
