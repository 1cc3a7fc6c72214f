"""Score networks, encoders/decoders and the model container."""

import pytest
import torch

from meddiff.errors import InputError
from meddiff.nn.unet import UNet
from meddiff.vdm.loss import level_values
from meddiff.vdm.networks import (LevelDecoder, LevelEncoder, ResNetDecoder, ResNetEncoder, ScoreNet, UNetScore,
                                  VDMModel, gamma_time, to_levels)
from meddiff.vdm.vlb import model_vlb
from meddiff.vdm.schedule import build_gamma


def _perturb(m):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def test_scorenet_adds_its_output_to_the_input_and_uses_time_and_class():
    torch.manual_seed(0)
    net = ScoreNet(data_dim=16, embedding_dim=32, n_layers=2, cond_dim=8)
    z, g, c = torch.randn(2, 1, 4, 4), torch.tensor([-10.0, 3.0]), torch.randn(2, 8)
    assert torch.equal(net(z, g, c), z)  # zero-initialised output layer: eps_hat = z + 0
    _perturb(net)
    out = net(z, g, c)
    assert out.shape == z.shape and not torch.equal(out, z)
    assert not torch.allclose(out, net(z, g.flip(0), c))  # time enters
    assert not torch.allclose(out, net(z, g, c.flip(0)))  # FiLM condition enters
    with pytest.raises(InputError, match="ScoreNet condition"):
        net(z, g, None)


def test_unet_score_concatenates_the_image_condition():
    unet = UNet(2, 1, channels=(8, 16), attention_levels=(False, False), norm_groups=4)
    score = UNetScore(unet)
    _perturb(unet)
    z, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    g = torch.tensor([-13.3, 5.0])
    assert torch.allclose(score(z, g, y), unet(torch.cat([z, y], 1), torch.tensor([0.0, 1000.0])), atol=1e-5)
    assert torch.allclose(gamma_time(g, -13.3, 5.0), torch.tensor([0.0, 1000.0]))


def test_level_encoder_decoder_and_to_levels():
    x = torch.tensor([[0, 1, 254, 255]])
    assert torch.allclose(LevelEncoder()(x), level_values(256)[x])
    assert to_levels(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    with pytest.raises(InputError, match="expected 0..255"):
        LevelEncoder()(torch.tensor([[256]]))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        to_levels(torch.tensor([1.5]))
    lp = LevelDecoder(256).log_prob(x, level_values(256)[x], torch.tensor(-13.3))
    assert float(lp) == pytest.approx(0.0, abs=1e-6)


def test_resnet_latent_model_and_class_conditioning_through_the_objective():
    torch.manual_seed(0)
    model = VDMModel(build_gamma("learned_nnet", n_features=32), ScoreNet(16, 32, 2, cond_dim=8),
                     ResNetEncoder((1, 4, 4), z_dim=16, hidden=32, n_layers=2, vocab_size=2),
                     ResNetDecoder((1, 4, 4), z_dim=16, hidden=32, n_layers=2, vocab_size=2), n_classes=3, class_dim=8)
    x = torch.randint(0, 2, (4, 1, 4, 4))
    terms = model_vlb(model, x, labels=torch.tensor([0, 1, 2, 1]), generator=torch.Generator().manual_seed(0))
    assert terms.reconstruction.shape == (4,) and terms.dims == 16
    bpd = terms.bpd()
    parts = float(bpd["reconstruction"].detach() + bpd["latent"].detach() + bpd["diffusion"].detach())
    assert float(bpd["total"].detach()) == pytest.approx(parts)
    bpd["total"].backward()
    for name in ("gamma.b", "gamma.l2.weight", "encoder.dense_in.weight", "decoder.dense_out.weight",
                 "class_embedding.weight"):
        assert name in model.state_dict()
        assert dict(model.named_parameters())[name].grad is not None
    with pytest.raises(InputError, match="class labels are required"):
        model_vlb(model, x)
    with pytest.raises(InputError, match="expected 0..2"):
        model.embed(torch.tensor([3]))


def test_same_generator_same_loss():
    model = VDMModel(build_gamma("fixed_linear"), ScoreNet(16, 16, 1))
    x = torch.randint(0, 256, (3, 1, 4, 4))
    a = model_vlb(model, x, generator=torch.Generator().manual_seed(4)).total
    b = model_vlb(model, x, generator=torch.Generator().manual_seed(4)).total
    assert torch.equal(a, b)
