import copy
import io
import pickle

import pytest
import torch
import torchvision
from torch import nn

from sktransfer._feature_model import FeatureModel
from sktransfer._lora import (
    LoRALinear,
    LoRAMultiheadAttention,
    add_lora,
    drop_unreached_adapters,
    freeze_all_but_lora,
    lora_parameters,
    unreached_adapters,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: on a busy machine, more threads cost far more than they bring."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    ).eval()


def _bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return transformers.BertModel(config).eval()


def _vit_input():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _bert_input():
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.tensor([[1] * 7, [1] * 4 + [0] * 3])}


def _run(network, inputs):
    if isinstance(inputs, dict):
        return network(**inputs).last_hidden_state
    return network(inputs)


NETWORKS = {"vit": (_vit, _vit_input), "bert": (_bert, _bert_input)}


def _perturb(network):
    """Non-zero B everywhere, as training would leave them."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in lora_parameters(network):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def test_linear_computes_the_base_layer_at_init_and_passes_its_attributes_through():
    base = nn.Linear(5, 3)
    layer = LoRALinear(base, rank=2, alpha=4)
    x = torch.randn(4, 5)
    assert torch.equal(layer(x), base(x))
    assert (layer.in_features, layer.out_features, layer.scaling) == (5, 3, 2.0)
    assert layer.weight is base.weight
    assert layer.bias is base.bias
    assert "rank=2, alpha=4" in repr(layer)
    assert lora_parameters(layer) == [layer.lora_A, layer.lora_B]


def test_linear_update_is_the_low_rank_product():
    layer = LoRALinear(nn.Linear(5, 3), rank=2, alpha=4)
    _perturb(layer)
    merged = layer.base.weight + layer.lora_B @ layer.lora_A * 2.0
    x = torch.randn(4, 5)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, merged, layer.base.bias))


def _attention_calls(embed_dim, batch_first, unbatched=False):
    """(args, kwargs) for self- and cross-attention, with and without masks of either kind and dtype."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, embed_dim, generator=generator)  # (length, batch, embed)
    memory = torch.randn(6, 2, embed_dim, generator=generator)
    if batch_first:
        x, memory = x.transpose(0, 1), memory.transpose(0, 1)
    if unbatched:
        return [((x[0], x[0], x[0]), {}), ((x[0], memory[0], memory[0]), {"need_weights": False})]
    padding = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    additive = torch.zeros(padding.shape).masked_fill(padding, float("-inf"))  # the float form of a mask
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    calls = []
    for need_weights in (True, False):
        calls += [
            ((x, x, x), {"need_weights": need_weights}),
            ((x, x, x), {"need_weights": need_weights, "attn_mask": causal, "is_causal": True}),
            ((x, x, x), {"key_padding_mask": padding[:, :4], "need_weights": need_weights}),
            ((x, memory, memory), {"key_padding_mask": additive, "need_weights": need_weights}),
            ((x, memory, memory), {"attn_mask": torch.rand(4, 6, generator=generator) > 0.8}),
            (
                (x, x, x),
                {"attn_mask": causal, "key_padding_mask": additive[:, :4], "average_attn_weights": False},
            ),
        ]
    return calls


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("unbatched", [False, True])
def test_attention_computes_the_base_attention_at_init(batch_first, unbatched):
    torch.manual_seed(0)
    base = nn.MultiheadAttention(8, num_heads=2, batch_first=batch_first)
    adapted = LoRAMultiheadAttention(base, rank=2)
    assert (adapted.batch_first, adapted.embed_dim, adapted.num_heads) == (batch_first, 8, 2)
    for training in (True, False):  # inference: nn.MultiheadAttention may take its fused path
        base.train(training), adapted.train(training)
        for args, kwargs in _attention_calls(8, batch_first, unbatched):
            with torch.set_grad_enabled(training):
                expected, got = base(*args, **kwargs), adapted(*args, **kwargs)
            torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=1e-5)
            if expected[1] is None:
                assert got[1] is None
            else:
                torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "options", [{"add_bias_kv": True}, {"add_zero_attn": True}, {"bias": False}, {"dropout": 0.5}]
)
def test_attention_passes_on_the_wrapped_modules_options(options):
    torch.manual_seed(0)
    base = nn.MultiheadAttention(8, 2, batch_first=True, **options)  # in training mode: dropout is on
    adapted = LoRAMultiheadAttention(base, rank=2)
    x, memory = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    torch.manual_seed(1)
    expected = base(x, memory, memory)
    torch.manual_seed(1)  # the same dropout draws
    torch.testing.assert_close(adapted(x, memory, memory), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_updates_both_projections_as_merged_weights_would(batch_first):
    torch.manual_seed(0)
    adapted = LoRAMultiheadAttention(nn.MultiheadAttention(8, 2, batch_first=batch_first), rank=2, alpha=3)
    _perturb(adapted)
    for left_out in ("in_proj", "out_proj"):  # either update on its own changes the outputs
        partial = copy.deepcopy(adapted)
        nn.init.zeros_(getattr(partial, f"{left_out}_lora_B"))
        args, kwargs = _attention_calls(8, batch_first)[0]
        assert not torch.allclose(partial(*args, **kwargs)[0], adapted.base(*args, **kwargs)[0], atol=1e-3)
    reference = copy.deepcopy(adapted.base)
    with torch.no_grad():
        reference.in_proj_weight += adapted.in_proj_lora_B @ adapted.in_proj_lora_A * 1.5
        reference.out_proj.weight += adapted.out_proj_lora_B @ adapted.out_proj_lora_A * 1.5
    for args, kwargs in _attention_calls(8, batch_first):
        torch.testing.assert_close(adapted(*args, **kwargs), reference(*args, **kwargs), atol=1e-6, rtol=1e-5)


def test_attention_with_separate_projections_is_refused():
    with pytest.raises(ValueError, match="packed input projections only"):
        LoRAMultiheadAttention(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))


def test_torch_transformer_encoders_fused_inference_does_not_bypass_the_adapters():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    assert encoder.use_nested_tensor
    add_lora(encoder, rank=2)
    _perturb(encoder)
    x = torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        inference = encoder(x, src_key_padding_mask=padding)
        expected = encoder.train()(x, src_key_padding_mask=padding)  # the plain path, never fused
    torch.testing.assert_close(inference[~padding], expected[~padding], atol=1e-5, rtol=1e-5)


def test_vit_is_unchanged_and_its_attention_and_mlp_layers_are_adapted():
    network, x = _vit(), _vit_input()
    with torch.no_grad():
        before = network(x)
        names = add_lora(network)
        torch.testing.assert_close(network(x), before, atol=1e-6, rtol=1e-5)
    for i in range(2):
        block = f"encoder.layers.encoder_layer_{i}"
        assert {f"{block}.self_attention", f"{block}.mlp.0", f"{block}.mlp.3"} <= set(names)
        assert f"{block}.self_attention.out_proj" not in names
        assert isinstance(network.get_submodule(f"{block}.self_attention"), LoRAMultiheadAttention)


def test_bert_is_unchanged_and_its_attention_and_feed_forward_layers_are_adapted():
    network, inputs = _bert(), _bert_input()
    with torch.no_grad():
        before = _run(network, inputs)
        names = add_lora(network)
        torch.testing.assert_close(_run(network, inputs), before, atol=1e-6, rtol=1e-5)
    expected = [
        f"encoder.layer.{i}.{layer}"
        for i in range(2)
        for layer in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ]
    ]
    assert names == expected  # the pooler is left out
    assert all(isinstance(network.get_submodule(name), LoRALinear) for name in names)


def test_a_layer_named_pooler_outside_a_text_encoder_is_adapted():
    # The rule that leaves out the unread pooler of a text encoder left out any nn.Linear named "pooler":
    # a user's network with one on the way to its features kept it frozen, with no warning.
    network = nn.Sequential()
    network.add_module("mixer", nn.Linear(4, 4))
    network.add_module("pooler", nn.Linear(4, 4))
    assert add_lora(network, rank=2) == ["mixer", "pooler"]


@pytest.mark.parametrize("kind", NETWORKS)
def test_training_moves_the_adapters_only(kind):
    make, make_input = NETWORKS[kind]
    network, inputs = make(), make_input()
    names = add_lora(network, rank=8)
    freeze_all_but_lora(network)
    adapters = {id(parameter) for parameter in lora_parameters(network)}
    trainable = [parameter for parameter in network.parameters() if parameter.requires_grad]
    assert {id(parameter) for parameter in trainable} == adapters
    # Each adapted weight (out × in) brings rank × (in + out) parameters.
    layers = [network.get_submodule(name) for name in names]
    weights = [layer.weight for layer in layers if isinstance(layer, LoRALinear)]
    for layer in layers:
        if isinstance(layer, LoRAMultiheadAttention):
            weights += [layer.base.in_proj_weight, layer.base.out_proj.weight]
    count = sum(parameter.numel() for parameter in trainable)
    assert count == sum(8 * (weight.shape[0] + weight.shape[1]) for weight in weights)
    fraction = count / sum(parameter.numel() for parameter in network.parameters())
    assert fraction < 0.17  # width 32 at rank 8: 15.9% (BERT), 16.1% (ViT); 1.2% for BERT-base
    frozen = {name: value.clone() for name, value in network.state_dict().items() if "lora_" not in name}
    with torch.no_grad():
        before = _run(network, inputs)
    target = torch.randn(before.shape, generator=torch.Generator().manual_seed(4))
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    network.train()
    for _ in range(3):
        optimizer.zero_grad()
        (_run(network, inputs) - target).square().mean().backward()
        assert all(
            parameter.grad is None for parameter in network.parameters() if not parameter.requires_grad
        )
        optimizer.step()
    network.eval()
    with torch.no_grad():
        assert not torch.allclose(_run(network, inputs), before, atol=1e-4)
    after = network.state_dict()
    assert all(torch.equal(after[name], value) for name, value in frozen.items())


@pytest.mark.parametrize("kind", NETWORKS)
def test_bfloat16_autocast_on_the_cpu(kind):
    make, make_input = NETWORKS[kind]
    network, inputs = make(), make_input()
    add_lora(network)
    freeze_all_but_lora(network)
    _perturb(network)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = _run(network, inputs)
    assert torch.isfinite(output).all()
    output.float().mean().backward()
    assert all(parameter.grad is not None for parameter in lora_parameters(network))


def test_linear_computes_in_the_inputs_dtype():
    layer = LoRALinear(nn.Linear(5, 3))
    _perturb(layer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(4, 5)).dtype == torch.bfloat16
    layer.base.to(torch.bfloat16)  # a bfloat16 network with float32 adapters
    assert layer(torch.randn(4, 5, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_adapted_networks_pickle_copy_and_load_state_dicts():
    network, x = _vit(), _vit_input()
    original = copy.deepcopy(network)
    add_lora(network, rank=4)
    _perturb(network)
    buffer = io.BytesIO()
    torch.save(network, buffer)
    buffer.seek(0)
    fresh = copy.deepcopy(original)
    add_lora(fresh, rank=4)
    fresh.load_state_dict(network.state_dict())
    copies = [
        pickle.loads(pickle.dumps(network)),
        torch.load(buffer, weights_only=False),
        copy.deepcopy(network),
        fresh,
    ]
    with torch.no_grad():
        expected = network(x)
        assert not torch.allclose(expected, original(x), atol=1e-4)
        for other in copies:
            assert torch.equal(other(x), expected)


def test_a_layer_reached_by_two_names_stays_shared():
    shared = nn.Linear(4, 4)
    network = nn.Sequential(shared, nn.ReLU(), shared)
    assert add_lora(network, rank=2) == ["0", "2"]
    assert network[0] is network[2]
    assert isinstance(network[0], LoRALinear)
    assert len(lora_parameters(network)) == 2


def test_adapting_twice_is_refused():
    network = nn.Sequential(nn.Linear(4, 2))
    add_lora(network)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(network)


def test_a_network_without_linear_or_attention_layers_is_refused():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    message = (
        r"strategy='lora' adapts linear and attention layers .* Sequential has none; use strategy='bitfit'"
    )
    with pytest.raises(ValueError, match=message):
        add_lora(network)
    with pytest.raises(ValueError, match="no LoRA adapters; call add_lora"):
        freeze_all_but_lora(network)


def test_a_bare_layer_is_refused():
    with pytest.raises(ValueError, match=r"put this Linear in an nn\.Sequential"):
        add_lora(nn.Linear(4, 2))


@pytest.mark.parametrize(
    ("rank", "alpha", "message"),
    [
        (0, 16, "rank must be a positive integer, got 0"),
        (-2, 16, "rank must be a positive integer"),
        (2.5, 16, "rank must be a positive integer"),
        (True, 16, "rank must be a positive integer"),
        ("8", 16, "rank must be a positive integer"),
        (8, 0, "alpha must be a positive number, got 0"),
        (8, -1.0, "alpha must be a positive number"),
        (8, float("nan"), "alpha must be a positive number"),
        (8, float("inf"), "alpha must be a positive number"),
        (8, "16", "alpha must be a positive number"),
    ],
)
def test_bad_rank_or_alpha_is_refused_before_anything_changes(rank, alpha, message):
    network = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=message):
        add_lora(network, rank=rank, alpha=alpha)
    assert type(network[0]) is nn.Linear
    with pytest.raises(ValueError, match=message):
        LoRALinear(nn.Linear(4, 2), rank=rank, alpha=alpha)


class _TinySwin(nn.Module):
    """torchvision's Swin block, whose attention reads its qkv and proj weights without calling them."""

    def __init__(self, num_classes=2):
        super().__init__()
        from torchvision.models.swin_transformer import SwinTransformerBlock
        from torchvision.ops import Permute

        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 4, stride=4),
            Permute([0, 2, 3, 1]),
            SwinTransformerBlock(8, 2, window_size=[2, 2], shift_size=[0, 0]),
            Permute([0, 3, 1, 2]),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def test_adapters_the_network_never_reaches_are_taken_out_with_a_warning(labelled_images):
    from sktransfer import FineTuneClassifier
    from sktransfer.exceptions import IgnoredSettingWarning

    X, y = labelled_images
    clf = FineTuneClassifier(_TinySwin, strategy="lora", lora_rank=2, device="cpu", max_epochs=1, lr=0.1)
    with pytest.warns(
        IgnoredSettingWarning, match=r"leaves out the layers \['features.2.attn.qkv', 'features"
    ):
        clf.fit(X, y)
    adapted = {name for name, layer in clf.module_.named_modules() if isinstance(layer, LoRALinear)}
    assert adapted == {"backbone.body.features.2.mlp.0", "backbone.body.features.2.mlp.3"}
    assert all(p.abs().sum() > 0 for name, p in clf.module_.named_parameters() if name.endswith("lora_B"))


def test_an_adapter_whose_weight_is_read_but_never_called_is_found():
    class ReadsTheWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.called, self.read = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return nn.functional.linear(self.called(x), self.read.weight)

    network = ReadsTheWeight()
    add_lora(network, rank=2)
    assert unreached_adapters(network, torch.randn(3, 4)) == ["read"]
    only_read = nn.Sequential(ReadsTheWeight())
    only_read[0].called = nn.Identity()
    add_lora(only_read, rank=2)
    with pytest.raises(ValueError, match=r"none of the adapted layers \(\['0.read'\]\)"):
        drop_unreached_adapters(
            FeatureModel(only_read, pooling=None), torch.randn(3, 4), "FineTuneClassifier"
        )
