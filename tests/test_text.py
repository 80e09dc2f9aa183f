"""Text encoders: inputs, loading (folder, hub cache, offline default), pooling, length order, estimators."""

import json
import pickle
import shutil
import threading
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from skorch.callbacks import Callback
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split
from transformers import AutoModel, AutoTokenizer

import sktransfer.text_encoders
from sktransfer import (
    DomainAdaptedClassifier,
    FeatureAlignmentClassifier,
    FineTuneClassifier,
    PretrainedFeatureExtractor,
)
from sktransfer.exceptions import IgnoredSettingWarning, TruncatedTextsWarning
from sktransfer.text_encoders import (
    IncompleteCacheWarning,
    TextEncoderUnavailableError,
    offline_text_model_folder,
)
from tests._models import TinyConvNet
from tests._text_models import REVIEWS, SENTIMENT, write_hub_cache, write_tiny_encoder


def extractor(model, **params):
    return PretrainedFeatureExtractor(model, device="cpu", **params)


def reference_embeddings(folder, texts, pooling="avg"):
    """Embeddings computed by hand with transformers: one text at a time, no padding."""
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            hidden = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0]
            rows.append(hidden[0] if pooling == "cls" else hidden.mean(dim=0))
    return torch.stack(rows).numpy()


# -- inputs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        list,
        tuple,
        np.array,
        lambda t: np.array(t, dtype=object),
        pd.Series,
        lambda t: pd.DataFrame({"text": t}),
        lambda t: pd.DataFrame({"text": t})[["text"]].to_numpy(),  # one column of a 2-D array
        pd.Index,  # fit took it, and transform failed (it has no .iloc)
    ],
    ids=["list", "tuple", "str-array", "object-array", "series", "dataframe", "one-column-array", "index"],
)
def test_every_form_of_text_gives_the_same_embeddings(tiny_text_model, wrap):
    fitted = extractor(tiny_text_model).fit(REVIEWS)
    np.testing.assert_allclose(fitted.transform(wrap(REVIEWS)), fitted.transform(REVIEWS), atol=1e-6)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["good", None], "sample 1 is None"),
        (pd.Series(["good", "bad", np.nan]), r"sample 2 is missing \(NaN or NA\)"),
        (pd.Series(["good", "bad", None], dtype="string"), r"sample 2 is missing \(NaN or NA\)"),
        (["good", np.float32("nan")], r"sample 1 is missing \(NaN or NA\)"),
        (["good", "caf\udce9 au lait"], r"sample 1 holds '\\udce9' at character 3, a lone surrogate"),
        (["good", 3], "sample 1 is a int"),
        ([], "X is empty"),
        ("a single text", "single string"),
        (np.zeros((3, 8, 8, 3), dtype=np.uint8), "text encoder"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), "2 columns"),
        (np.array([["a fine film", "bad"]]), r"X is a \(1, 2\) array of strings: pass the one column"),
    ],
)
def test_bad_text_input_names_the_sample(tiny_text_model, texts, message):
    with pytest.raises(ValueError, match=message):
        extractor(tiny_text_model).fit(texts)


def test_a_model_changed_between_texts_and_images_after_fit_asks_for_fit(tiny_text_model):
    # The error said the text encoder's name named no model, and told the user to pass that very name.
    images = np.zeros((2, 8, 8, 3), np.uint8)
    on_images = extractor(TinyConvNet()).fit(images).set_params(model=tiny_text_model)
    with pytest.raises(
        ValueError, match=r"fitted to read images, and model has changed since to .* call fit"
    ):
        on_images.transform(REVIEWS)
    on_texts = extractor(tiny_text_model).fit(REVIEWS).set_params(model=TinyConvNet())
    with pytest.raises(ValueError, match="fitted to read texts, and model has changed since to TinyConvNet"):
        on_texts.transform(images)


def test_empty_strings_are_texts(tiny_text_model):
    embeddings = extractor(tiny_text_model).fit(REVIEWS).transform(["", "good", ""])
    assert np.isfinite(embeddings).all()
    np.testing.assert_allclose(embeddings[0], embeddings[2])


def test_text_given_to_an_image_backbone_names_both():
    with pytest.raises(
        ValueError, match=r"X holds text.*'efficientnet_lite0' reads images.*all-MiniLM-L6-v2"
    ):
        extractor("efficientnet_lite0").fit(["a great film", "boring"])


@pytest.mark.parametrize("estimator", [PretrainedFeatureExtractor, FineTuneClassifier])
def test_a_loaded_transformers_model_is_refused_naming_where_it_came_from(tiny_text_model, estimator):
    loaded = AutoModel.from_pretrained(tiny_text_model)
    before = {name: value.clone() for name, value in loaded.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"model=BertModel is a loaded Hugging Face transformers model"
    ) as error:
        estimator(loaded, device="cpu").fit(REVIEWS, SENTIMENT)
    assert f"Pass model={str(tiny_text_model)!r}" in str(error.value)  # the folder it was loaded from
    assert "save_pretrained(folder)" in str(error.value)
    assert all(torch.equal(before[name], value) for name, value in loaded.state_dict().items())


def test_image_files_given_to_a_text_encoder_name_both(tiny_text_model, tmp_path):
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match=r"X holds image files.*text encoder"):
        extractor(tiny_text_model).fit([str(path)])


def test_missing_image_files_are_still_reported_as_missing_files():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extractor("efficientnet_lite0").fit(["photos/cat.jpg"])


def test_preprocess_is_refused_for_text(tiny_text_model):
    with pytest.raises(ValueError, match=r"preprocess=.*text encoder"):
        extractor(tiny_text_model, preprocess=str.lower).fit(REVIEWS)


def test_user_input_is_not_modified(tiny_text_model):
    texts = list(REVIEWS)
    series = pd.Series(REVIEWS)
    extractor(tiny_text_model).fit(texts).transform(series)
    assert texts == REVIEWS
    assert series.tolist() == REVIEWS


# -- loading -----------------------------------------------------------------------------------------------


def test_folder_embeddings_match_transformers_one_text_at_a_time(tiny_text_model):
    """Padding, length order and batching change nothing: mean over the real tokens, rows in input order."""
    texts = [t for t in REVIEWS if t]
    embeddings = extractor(tiny_text_model, batch_size=3).fit(texts).transform(texts)
    np.testing.assert_allclose(embeddings, reference_embeddings(tiny_text_model, texts), atol=1e-5)


def test_cls_max_and_model_pooling(tiny_text_model, tmp_path):
    texts = [t for t in REVIEWS if t]
    cls = extractor(tiny_text_model, pooling="cls").fit(texts).transform(texts)
    np.testing.assert_allclose(cls, reference_embeddings(tiny_text_model, texts, "cls"), atol=1e-5)
    maximum = extractor(tiny_text_model, pooling="max", batch_size=4).fit(texts).transform(texts)
    alone = np.concatenate([extractor(tiny_text_model, pooling="max").fit([t]).transform([t]) for t in texts])
    np.testing.assert_allclose(maximum, alone, atol=1e-5)
    # the folder's sentence-transformers config: mean pooling, then its Normalize module
    own = extractor(tiny_text_model, pooling="model").fit(texts).transform(texts)
    mean = extractor(tiny_text_model, normalize=True).fit(texts).transform(texts)
    np.testing.assert_allclose(own, mean, atol=1e-6)
    cls_folder = write_tiny_encoder(tmp_path / "cls", pooling="cls_token")
    np.testing.assert_allclose(
        extractor(cls_folder, pooling="model").fit(texts).transform(texts),
        extractor(cls_folder, pooling="cls", normalize=True).fit(texts).transform(texts),
        atol=1e-6,
    )
    # a mode beside mean pooling (sentence-transformers concatenates the two) is refused, not dropped
    config = cls_folder / "1_Pooling" / "config.json"
    modes = {
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_mean_sqrt_len_tokens": True,
    }
    config.write_text(json.dumps({"word_embedding_dimension": 16, **modes}))
    with pytest.raises(ValueError, match=r"only one of mean, CLS or max pooling is supported"):
        extractor(cls_folder, pooling="model").fit(texts)
    # sentence-transformers 5 and later save the mode by name: it was refused as if it were none of the three
    config.write_text(json.dumps({"embedding_dimension": 16, "pooling_mode": "cls", "include_prompt": True}))
    np.testing.assert_allclose(
        extractor(cls_folder, pooling="model").fit(texts).transform(texts),
        extractor(cls_folder, pooling="cls", normalize=True).fit(texts).transform(texts),
        atol=1e-6,
    )
    config.write_text(json.dumps({"embedding_dimension": 16, "pooling_mode": "lasttoken"}))
    with pytest.raises(ValueError, match=r"pools with \['lasttoken'\]; only one of mean, CLS or max"):
        extractor(cls_folder, pooling="model").fit(texts)


def test_a_folder_that_lowercases_its_input_reads_texts_lowercased(tmp_path):
    folder = write_tiny_encoder(tmp_path / "cased", pooling="mean_tokens")
    tokenizer_config = folder / "tokenizer_config.json"
    tokenizer_config.write_text(
        json.dumps({**json.loads(tokenizer_config.read_text()), "do_lower_case": False})
    )
    shouted = [text.upper() for text in REVIEWS]
    cased = extractor(folder).fit(REVIEWS)
    assert not np.allclose(cased.transform(shouted), cased.transform(REVIEWS))  # a cased vocabulary
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 24, "do_lower_case": True})
    )
    lowercasing = extractor(folder).fit(REVIEWS)  # as sentence-transformers reads such a folder
    np.testing.assert_allclose(lowercasing.transform(shouted), lowercasing.transform(REVIEWS), atol=1e-6)
    assert "lowercase=True" in repr(lowercasing.preprocess_)


def test_pooling_none_is_refused_for_text(tiny_text_model):
    with pytest.raises(ValueError, match="pooling=None flattens the token sequence"):
        extractor(tiny_text_model, pooling=None).fit(REVIEWS)


def test_sentence_transformers_max_length_truncates(tiny_text_model):
    fitted = extractor(tiny_text_model).fit(REVIEWS)
    assert fitted.preprocess_.max_length == 24  # sentence_bert_config.json, not the tokenizer's 32
    long_text = " ".join(["good"] * 100)
    assert fitted.preprocess_([long_text]).shape == (1, 24)


def test_texts_cut_at_the_maximum_length_are_named_once_per_call(tiny_text_model):
    texts = [*REVIEWS[:3], " ".join(["good"] * 30) + " but awful", *REVIEWS[3:]]
    labels = [*SENTIMENT[:3], SENTIMENT[0], *SENTIMENT[3:]]
    fitted = extractor(tiny_text_model).fit(texts)
    with pytest.warns(
        TruncatedTextsWarning,
        match=r"1 of the 9 texts .* maximum of 24 tokens \(samples \[3\]; the longest has 3[0-9]\)",
    ):
        fitted.transform(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedTextsWarning)
        fitted.transform(REVIEWS)  # none cut: no word
    clf = FineTuneClassifier(
        tiny_text_model, device="cpu", max_epochs=2, early_stopping=True, validation_fraction=0.5
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(texts * 2, labels * 2)  # the fit's own predictions (early stopping) do not repeat it
    cut = [str(w.message) for w in caught if w.category is TruncatedTextsWarning]
    assert len(cut) == 1
    assert cut[0].startswith("2 of the 18 texts")
    probe = FineTuneClassifier(tiny_text_model, device="cpu", max_epochs=1, strategy="linear_probe")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe.fit(texts, labels)  # the stored-features path: named once too
    assert [str(w.message)[:16] for w in caught if w.category is TruncatedTextsWarning] == [
        "1 of the 9 texts"
    ]
    with pytest.warns(TruncatedTextsWarning, match=r"samples \[3\]"):
        clf.predict(texts)
    # texts of the user's own validation set are cut as well: named too (they were cut without a word)
    validation = predefined_split(SkorchDataset(np.array(texts[2:5], dtype=object), np.array(labels[2:5])))
    with pytest.warns(
        TruncatedTextsWarning, match=r"1 of the 3 validation texts \(train_split\) is .*samples \[1\]"
    ):
        FineTuneClassifier(tiny_text_model, device="cpu", max_epochs=1, train_split=validation).fit(
            REVIEWS, SENTIMENT
        )


class PicklesEachEpoch(Callback):
    pickles: ClassVar[list] = []

    def on_epoch_end(self, net, **kwargs):
        self.pickles.append(pickle.dumps(net))


def test_cut_texts_are_named_among_all_of_x_with_a_cache_and_after_a_checkpoint(tiny_text_model, tmp_path):
    texts = [*REVIEWS[:3], " ".join(["good"] * 30) + " but awful", *REVIEWS[3:]]
    cached = extractor(tiny_text_model, cache=tmp_path / "cache").fit(texts)
    cached.transform(texts[:3])
    for _ in range(2):  # some rows cached, then all: the cut one is still named, by its place in X
        with pytest.warns(TruncatedTextsWarning, match=r"1 of the 9 texts .*\(samples \[3\];"):
            cached.transform(texts)
    PicklesEachEpoch.pickles.clear()
    keep = PicklesEachEpoch()  # a checkpoint made during fit
    with pytest.warns(TruncatedTextsWarning):
        FineTuneClassifier(tiny_text_model, device="cpu", max_epochs=1, callbacks=[keep]).fit(
            texts, [*SENTIMENT[:3], "pos", *SENTIMENT[3:]]
        )
    with pytest.warns(TruncatedTextsWarning, match=r"samples \[3\]"):  # it still names the texts it cuts
        pickle.loads(PicklesEachEpoch.pickles[-1]).predict(texts)


def test_the_cache_key_of_a_text_encoder_stays_the_same_across_transforms(tiny_text_model, tmp_path):
    # The tokenizer's padding state changes as it runs (in worker processes here): it is keyed once per fit.
    fitted = extractor(tiny_text_model, cache=tmp_path, num_workers=1).fit(REVIEWS)
    keys = [fitted._embedding_key()]
    for _ in range(2):
        fitted.transform(REVIEWS)
        keys.append(fitted._embedding_key())
    assert len(set(keys)) == 1
    assert len(list(tmp_path.iterdir())) == 1  # one folder of embeddings


def test_the_cache_key_of_a_text_encoder_ignores_the_state_of_transformers(tiny_text_model, tmp_path):
    # transformers' forward wrappers read a registry that loading a model fills: hashed by content, the key
    # changed when another architecture was built, and a fresh process (an unpickled extractor) missed the
    # cache it had filled.
    from transformers import RobertaConfig, RobertaModel

    fitted = extractor(tiny_text_model, cache=tmp_path).fit(REVIEWS)
    key = fitted._embedding_key()
    RobertaModel(
        RobertaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    assert fitted._embedding_key() == key


def test_layer_takes_a_block_output(tiny_text_model):
    last = extractor(tiny_text_model).fit(REVIEWS).transform(REVIEWS)
    first_block = extractor(tiny_text_model, layer="encoder.layer.0").fit(REVIEWS).transform(REVIEWS)
    assert first_block.shape == last.shape
    assert not np.allclose(first_block, last)
    with pytest.raises(ValueError, match=r"not a module of this text encoder.*encoder\.layer\.1"):
        extractor(tiny_text_model, layer="encoder.layer.9").fit(REVIEWS)


def test_a_pass_at_a_layer_that_runs_once_stops_there(tiny_text_model):
    # The blocks after the layer ran at every pass, their output discarded: a search over early layers paid
    # for the whole transformer at each candidate.
    fitted = extractor(tiny_text_model, layer="encoder.layer.0").fit(REVIEWS)
    expected = fitted.transform(REVIEWS)  # runs the whole pass once more (fit's run was on one text)
    runs = []
    next_block = fitted.backbone_.body.transformer.encoder.layer[1]
    next_block.register_forward_hook(lambda *_: runs.append(1))
    np.testing.assert_array_equal(fitted.transform(REVIEWS), expected)
    assert runs == []


def test_what_a_pass_learns_of_the_layer_leaves_the_cache_key_as_it_was(tiny_text_model, tmp_path):
    # Whether the layer runs once was part of the key: an extractor pickled before it existed embedded X
    # again at its second transform, and caches filled before it were never served.
    fitted = extractor(tiny_text_model, layer="encoder.layer.0", cache=tmp_path).fit(REVIEWS)
    encoder = fitted.backbone_.body
    keys = []
    for learnt in ("encoder.layer.0", None):
        encoder._runs_once_at = learnt
        keys.append(fitted._embedding_key())
    del encoder._runs_once_at  # as in an older pickle
    keys.append(fitted._embedding_key())
    assert len(set(keys)) == 1
    fitted.transform(REVIEWS)
    assert encoder._runs_once_at == "encoder.layer.0"
    # unpickled elsewhere (another transformers, say), the first pass runs whole again
    assert pickle.loads(pickle.dumps(fitted)).backbone_.body._runs_once_at is None


def test_a_layer_that_runs_several_times_gives_its_last_run(tmp_path):
    # ALBERT runs one shared block at every depth: a pass must not end at its first run.
    from transformers import AlbertConfig, AlbertModel

    folder = write_tiny_encoder(tmp_path / "bert")
    config = AlbertConfig(
        vocab_size=AutoTokenizer.from_pretrained(folder).vocab_size,
        embedding_size=8,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    AlbertModel(config).save_pretrained(folder)  # over the BERT weights, beside the same tokenizer
    shared = "encoder.albert_layer_groups.0.albert_layers.0"
    fitted = extractor(str(folder), layer=shared, pooling="avg").fit(REVIEWS)
    last_hidden_state = extractor(str(folder), pooling="avg").fit(REVIEWS).transform(REVIEWS)
    for _ in range(2):  # the first pass counts the runs, the next one reads as it did
        np.testing.assert_allclose(fitted.transform(REVIEWS), last_hidden_state, rtol=1e-5, atol=1e-6)


def test_threads_sharing_an_extractor_at_a_layer_each_get_their_own_texts_embeddings(tiny_text_model):
    fitted = extractor(tiny_text_model, layer="encoder.layer.0").fit(REVIEWS)
    texts = {"first": REVIEWS[:2], "second": REVIEWS[2:4]}
    expected = {name: fitted.transform(batch) for name, batch in texts.items()}
    next_block = fitted.backbone_.body.transformer.encoder.layer[1]
    both_past_the_layer, run_next_block = threading.Barrier(2, timeout=20), next_block.forward

    def forward_once_both_passes_ran_the_layer(*args, **kwargs):
        both_past_the_layer.wait()  # each pass's hook has seen both passes' outputs of the layer by now
        return run_next_block(*args, **kwargs)

    next_block.forward = forward_once_both_passes_ran_the_layer
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(texts, pool.map(fitted.transform, texts.values()), strict=True))
    for name, embeddings in results.items():
        np.testing.assert_allclose(embeddings, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_layer_narrower_or_wider_than_the_hidden_size_gets_a_head_of_its_width(tiny_text_model):
    layer = "encoder.layer.0.intermediate"  # the block's feed-forward: 32 wide, the hidden states 16
    assert extractor(tiny_text_model, layer=layer).fit(REVIEWS).transform(REVIEWS).shape == (len(REVIEWS), 32)
    clf = FineTuneClassifier(tiny_text_model, layer=layer, strategy="full", max_epochs=1, device="cpu")
    assert clf.fit(REVIEWS, SENTIMENT).predict_proba(REVIEWS).shape == (len(REVIEWS), 2)  # was a shape error


def test_a_layer_that_returns_a_model_output_or_never_runs(tiny_text_model):
    last = extractor(tiny_text_model).fit(REVIEWS).transform(REVIEWS)
    whole_encoder = extractor(tiny_text_model, layer="encoder").fit(REVIEWS).transform(REVIEWS)
    np.testing.assert_allclose(whole_encoder, last, rtol=1e-5, atol=1e-6)  # its last_hidden_state
    with pytest.raises(ValueError, match=r"layer='encoder.layer' did not run .* blocks \['encoder.layer.0'"):
        extractor(tiny_text_model, layer="encoder.layer").fit(REVIEWS)


def test_hub_id_loads_from_the_hugging_face_cache_offline(tiny_text_model, tmp_path, monkeypatch):
    cache = write_hub_cache(tmp_path / "hub", "someone/tiny-encoder", tiny_text_model)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from_cache = extractor("someone/tiny-encoder", pooling="model").fit(REVIEWS).transform(REVIEWS)
    from_folder = extractor(tiny_text_model, pooling="model").fit(REVIEWS).transform(REVIEWS)
    np.testing.assert_allclose(from_cache, from_folder, atol=1e-6)


def test_a_cache_without_the_sentence_transformers_files_warns_offline(
    tiny_text_model, tmp_path, monkeypatch
):
    # A cache filled by AutoModel.from_pretrained lacks modules.json and the pooling settings: offline, they
    # were read as absent from the model, and pooling="model" silently dropped the normalisation.
    folder = tmp_path / "partial"
    shutil.copytree(tiny_text_model, folder)
    for name in ("modules.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    shutil.rmtree(folder / "1_Pooling")
    cache = write_hub_cache(tmp_path / "hub", "someone/tiny-encoder", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.warns(
        IncompleteCacheWarning, match=r"modules.json is not in the Hugging Face cache.*download"
    ):
        extractor("someone/tiny-encoder", pooling="model").fit(REVIEWS)
    with warnings.catch_warnings():  # a plain transformer's cache lacks them too: mean pooling reads none
        warnings.simplefilter("error", IncompleteCacheWarning)
        extractor("someone/tiny-encoder").fit(REVIEWS)


def test_a_sentence_transformers_cache_without_its_settings_warns_at_any_pooling(
    tiny_text_model, tmp_path, monkeypatch
):
    # A cache with modules.json but without sentence_bert_config.json cut texts at the network's limit (512
    # for MiniLM) instead of its authors' 256, and dropped their lowercasing, with no word at any pooling.
    folder = tmp_path / "partial"
    shutil.copytree(tiny_text_model, folder)
    (folder / "sentence_bert_config.json").unlink()
    cache = write_hub_cache(tmp_path / "hub", "someone/tiny-encoder", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for pooling in ("avg", "model"):
        with pytest.warns(
            IncompleteCacheWarning, match=r"sentence_bert_config.json is not in the Hugging Face"
        ):
            extractor("someone/tiny-encoder", pooling=pooling).fit(REVIEWS)
    # filled online, the cache records the files the model does not have: nothing is missing then
    absent = cache / "models--someone--tiny-encoder" / ".no_exist" / "0123456789abcdef"
    absent.mkdir(parents=True)
    (absent / "sentence_bert_config.json").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteCacheWarning)
        extractor("someone/tiny-encoder").fit(REVIEWS)


def _copied(folder, into, **tokenizer_settings):
    """A copy of the model ``folder`` whose tokenizer_config.json is updated with ``tokenizer_settings``."""
    shutil.copytree(folder, into)
    config_path = into / "tokenizer_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **tokenizer_settings}))
    return into


def test_a_folder_without_its_tokenizer_files_is_refused(tiny_text_model, tmp_path):
    # model.save_pretrained(folder) alone writes no tokenizer: transformers built an empty one, every word
    # read as unknown, and every text got the same embedding, silently.
    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_text_model}/{name}", folder)
    with pytest.raises(
        TextEncoderUnavailableError,
        match=r"knows \d+ tokens where the network embeds 74.*tokenizer.save_pretrained",
    ):
        extractor(str(folder)).fit(REVIEWS)


def test_a_folder_without_weights_or_config_says_what_the_folder_lacks(tiny_text_model, tmp_path):
    folder = tmp_path / "no_weights"
    shutil.copytree(tiny_text_model, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(TextEncoderUnavailableError, match="the folder lacks files that the encoder needs"):
        extractor(str(folder)).fit(
            REVIEWS
        )  # was: "not in the Hugging Face cache ... huggingface-cli download"
    older = tmp_path / "older_layout"  # sentence-transformers' older layout: the transformer in a subfolder
    older.mkdir()
    shutil.copytree(tiny_text_model, older / "0_Transformer")
    shutil.move(older / "0_Transformer" / "modules.json", older)
    with pytest.raises(TextEncoderUnavailableError, match="0_Transformer"):
        extractor(str(older)).fit(REVIEWS)  # was: "X holds text ... but model=... reads images"


def test_a_tokenizer_that_leaves_out_the_attention_mask_still_pools_over_real_tokens(
    tiny_text_model, tmp_path
):
    folder = _copied(tiny_text_model, tmp_path / "no_mask", model_input_names=["input_ids", "token_type_ids"])
    texts = ["good", "a long and dull film"]
    np.testing.assert_allclose(
        extractor(str(folder)).fit_transform(texts),
        extractor(tiny_text_model).fit_transform(texts),
        atol=1e-6,
    )  # was: "model could not run on an input ...: 'attention_mask'"


def test_a_long_text_is_cut_at_its_end_as_the_warning_says(tiny_text_model, tmp_path):
    # A tokenizer configured to truncate on the left dropped the start of a long text, while the warning said
    # that what follows the maximum never reaches the network.
    folder = _copied(tiny_text_model, tmp_path / "left", truncation_side="left")
    texts = ["good " + "film " * 40, "bad " + "film " * 40]
    with pytest.warns(TruncatedTextsWarning, match="what follows never reaches the network"):
        good, bad = extractor(str(folder)).fit_transform(texts)
    assert np.abs(good - bad).max() > 1e-3


def test_roberta_positions_offset_by_the_padding_index_bound_the_maximum_length(tiny_text_model, tmp_path):
    # RoBERTa numbers positions from its padding index on: 514 position embeddings hold 512 tokens. Without a
    # maximum in its tokenizer, texts ran to 514 tokens and the network failed with an IndexError.
    from transformers import RobertaConfig, RobertaModel

    folder = _copied(tiny_text_model, tmp_path / "roberta")
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("model_max_length")
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    for name in ("modules.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    config = RobertaConfig(
        vocab_size=74,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=34,
        pad_token_id=0,
    )
    RobertaModel(config).save_pretrained(folder)
    fitted = extractor(str(folder)).fit(REVIEWS)
    assert fitted.preprocess_.max_length == 34 - 0 - 1
    with pytest.warns(TruncatedTextsWarning, match="maximum of 33 tokens"):
        assert fitted.transform(["good " * 40]).shape == (1, 16)


def test_missing_hub_model_names_the_cache_and_the_way_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        TextEncoderUnavailableError, match=rf"(?s){tmp_path}.*huggingface-cli download someone/absent"
    ):
        extractor("someone/absent").fit(REVIEWS)


@pytest.mark.parametrize("name", ["bert-base-uncased", "all-minilm-l6-v2"])
def test_a_bare_name_not_in_the_cache_is_not_called_an_image_model(name, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ValueError, match=rf"model='{name}' names no image model and no text encoder found here"
    ):
        extractor(name).fit(REVIEWS)  # was "model=... reads images"


def test_random_and_checkpoint_weights(tiny_text_model, tmp_path):
    pretrained = extractor(tiny_text_model).fit(REVIEWS).transform(REVIEWS)
    random_a = extractor(tiny_text_model, weights=None, random_state=1).fit(REVIEWS).transform(REVIEWS)
    random_b = extractor(tiny_text_model, weights=None, random_state=1).fit(REVIEWS).transform(REVIEWS)
    np.testing.assert_array_equal(random_a, random_b)
    assert not np.allclose(random_a, pretrained)
    path = tmp_path / "encoder.pt"
    torch.save(AutoModel.from_pretrained(tiny_text_model).state_dict(), path)
    from_checkpoint = extractor(tiny_text_model, weights=str(path)).fit(REVIEWS).transform(REVIEWS)
    np.testing.assert_allclose(from_checkpoint, pretrained, atol=1e-6)
    with pytest.raises(ValueError, match="weights='IMAGENET1K_V1' is not available for the text encoder"):
        extractor(tiny_text_model, weights="IMAGENET1K_V1").fit(REVIEWS)
    state = AutoModel.from_pretrained(tiny_text_model).state_dict()
    torch.save({**state, "pooler.dense.bias": torch.zeros(3)}, tmp_path / "other.pt")  # another shape
    with pytest.raises(ValueError, match=r"other.pt' does not match the architecture: 1 tensors"):
        extractor(tiny_text_model, weights=str(tmp_path / "other.pt")).fit(REVIEWS)


def test_offline_default_matches_a_hand_written_transformers_pipeline():
    folder = str(offline_text_model_folder())
    texts = ["A moving, beautifully shot film.", "", "Dull and far too long."]
    embeddings = extractor("all-MiniLM-L6-v2", pooling="model").fit(texts).transform(texts)
    expected = reference_embeddings(folder, texts)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    hub_name = (
        extractor("sentence-transformers/all-MiniLM-L6-v2", pooling="model").fit(texts).transform(texts)
    )
    np.testing.assert_array_equal(hub_name, embeddings)


def test_pickled_text_extractor_runs_without_its_files(tiny_text_model, tmp_path):
    folder = write_tiny_encoder(tmp_path / "moved")
    fitted = extractor(str(folder)).fit(REVIEWS)
    expected = fitted.transform(REVIEWS)
    data = pickle.dumps(fitted)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    np.testing.assert_array_equal(pickle.loads(data).transform(REVIEWS), expected)


def test_embedding_cache_serves_texts_seen_before(tiny_text_model, tmp_path):
    fitted = extractor(tiny_text_model, cache=tmp_path).fit(REVIEWS)
    first = fitted.transform(REVIEWS)
    fitted.backbone_.body.transformer.embeddings.word_embeddings.weight.data.zero_()  # keys are made at fit
    np.testing.assert_array_equal(fitted.transform(REVIEWS[::-1]), first[::-1])


# -- estimators --------------------------------------------------------------------------------------------


def test_pipeline_grid_search_over_the_encoder_layer(tiny_text_model):
    pipeline = make_pipeline(extractor(tiny_text_model), LogisticRegression())
    search = GridSearchCV(pipeline, {"pretrainedfeatureextractor__layer": [None, "encoder.layer.0"]}, cv=2)
    search.fit(REVIEWS, SENTIMENT)
    assert set(search.predict(["a good film"])) <= {"pos", "neg"}


@pytest.mark.parametrize("strategy", ["linear_probe", "full", "gradual", "lp_ft", "bitfit", "lora"])
def test_fine_tuning_strategies_on_text(tiny_text_model, strategy):
    clf = FineTuneClassifier(
        tiny_text_model, strategy=strategy, max_epochs=2, batch_size=4, device="cpu", random_state=0
    )
    clf.fit(REVIEWS, SENTIMENT)
    assert clf.predict(REVIEWS).tolist() == clone(clf).fit(REVIEWS, SENTIMENT).predict(REVIEWS).tolist()
    assert set(clf.classes_) == {"pos", "neg"}
    np.testing.assert_allclose(clf.predict_proba(REVIEWS).sum(axis=1), 1.0)


def test_text_stages_are_the_embeddings_then_each_block(tiny_text_model):
    clf = FineTuneClassifier(
        tiny_text_model, max_epochs=1, layer_decay=0.5, lr=1e-3, lr_schedule=None, warmup=0.0, device="cpu"
    )
    clf.fit(REVIEWS, SENTIMENT)
    assert clf.module_.stage_names == [
        "body.transformer.embeddings",
        "body.transformer.encoder.layer.0",
        "body.transformer.encoder.layer.1",
    ]
    rates = {group["stage_depth"]: group["lr"] for group in clf.optimizer_.param_groups}
    ratio = clf._backbone_lr_ratio()
    assert rates[0] == pytest.approx(1e-3 * ratio)
    assert rates[2] == pytest.approx(1e-3 * ratio * 0.25)  # the embeddings, two blocks down


def test_text_stages_end_at_the_layer_and_the_blocks_after_it_never_train(tiny_text_model):
    # The blocks after layer get no gradient: gradual unfreezing reached them first, and nothing trained.
    clf = FineTuneClassifier(
        tiny_text_model,
        layer="encoder.layer.0",
        strategy="gradual",
        freeze_epochs=1,
        unfreeze_epochs=2,
        max_epochs=3,
        lr=1e-2,
        device="cpu",
        random_state=0,
    ).fit(REVIEWS, SENTIMENT)
    assert clf.module_.stage_names == ["body.transformer.embeddings", "body.transformer.encoder.layer.0"]
    assert clf.history[:, "trainable_stages"] == [0, 1, 2]
    encoder = clf.module_.backbone.body.transformer.encoder
    assert all(parameter.requires_grad for parameter in encoder.layer[0].parameters())
    assert not any(parameter.requires_grad for parameter in encoder.layer[1].parameters())
    whole = FineTuneClassifier(tiny_text_model, strategy="full", max_epochs=1, device="cpu").fit(
        REVIEWS, SENTIMENT
    )
    pooler = whole.module_.backbone.body.transformer.pooler  # the features are hidden states, not its output
    assert not any(parameter.requires_grad for parameter in pooler.parameters())
    # at layer="pooler" the pooler's output is the features: it is the top stage, and trains
    at_pooler = FineTuneClassifier(
        tiny_text_model, layer="pooler", strategy="full", max_epochs=1, device="cpu"
    ).fit(REVIEWS, SENTIMENT)
    assert at_pooler.module_.stage_names[-1] == "body.transformer.pooler"
    pooler = at_pooler.module_.backbone.body.transformer.pooler
    assert all(parameter.requires_grad for parameter in pooler.parameters())
    lora = FineTuneClassifier(
        tiny_text_model, layer="pooler", strategy="lora", lora_rank=2, max_epochs=1, device="cpu"
    ).fit(REVIEWS, SENTIMENT)
    adapted = lora.module_.backbone.body.transformer.pooler.dense
    assert [name for name, p in adapted.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]


def test_augment_on_texts_is_refused_with_the_parameter_named(tiny_text_model):
    clf = FineTuneClassifier(tiny_text_model, augment="default", max_epochs=1, device="cpu")
    with pytest.raises(
        ValueError, match=r"holds no images to augment \(feature vectors or texts\): set augment"
    ):
        clf.fit(REVIEWS, SENTIMENT)
    assert not clf.initialized_  # refused before the weights load
    fitted = clf.set_params(augment=None).fit(REVIEWS, SENTIMENT)
    with pytest.raises(ValueError, match="set augment=None"):  # and before a further call trains
        fitted.set_params(augment="default").partial_fit(REVIEWS, SENTIMENT)
    assert len(fitted.history) == 1


def test_fine_tuned_text_classifier_pickles(tiny_text_model):
    clf = FineTuneClassifier(tiny_text_model, strategy="full", max_epochs=1, device="cpu", random_state=0)
    clf.fit(REVIEWS, SENTIMENT)
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(clf)).predict_proba(REVIEWS), clf.predict_proba(REVIEWS)
    )


def test_domain_adaptation_on_text_both_paths(tiny_text_model):
    target = ["GOOD FILM!!", "awful plot...", "very fun", "boring story"]
    X = REVIEWS + target
    y = np.array(SENTIMENT + [-1] * len(target), dtype=object)
    deep = DomainAdaptedClassifier(
        method="dann", model=tiny_text_model, max_epochs=2, batch_size=4, device="cpu", random_state=0
    )
    assert deep.fit(X, y).predict(target).shape == (4,)
    # The scorers' one pass runs the texts sorted by length, as predict_proba does, and puts the rows back.
    features, proba = deep._embed_and_predict_proba(X)
    np.testing.assert_array_equal(proba, deep.predict_proba(X))
    one_at_a_time = np.concatenate([deep.embed([text]) for text in X])  # no padding
    np.testing.assert_allclose(features, one_at_a_time, rtol=1e-4, atol=1e-5)
    # Self-training runs the target rows' tokens through the epoch's copy of the weights.
    deep.set_params(method="self_training", self_training_epochs=1, pseudo_label_threshold=0.0)
    assert deep.fit(X, y).predict(target).shape == (4,)
    embed = extractor(tiny_text_model)
    shallow = FeatureAlignmentClassifier(LogisticRegression(), method="coral")
    features = embed.fit(X).transform(X)
    assert shallow.fit(features, y).predict(embed.transform(target)).shape == (4,)


def test_lora_trains_only_adapters_and_the_head_and_logs_the_fraction(tiny_text_model):
    clf = FineTuneClassifier(
        tiny_text_model,
        strategy="lora",
        lora_rank=2,
        max_epochs=2,
        batch_size=4,
        device="cpu",
        random_state=0,
    )
    clf.fit(REVIEWS, SENTIMENT)
    trainable = {name for name, p in clf.module_.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora" in name or name.startswith("head.") for name in trainable)
    assert any(".query.lora_A" in name for name in trainable)
    assert any("intermediate.dense.lora_B" in name for name in trainable)
    fraction = clf.history[-1, "trainable_fraction"]
    total = sum(p.numel() for p in clf.module_.parameters())
    assert fraction == pytest.approx(
        sum(p.numel() for n, p in clf.module_.named_parameters() if n in trainable) / total
    )
    original = AutoModel.from_pretrained(tiny_text_model).state_dict()
    query = clf.module_.backbone.body.transformer.encoder.layer[0].attention.self.query
    np.testing.assert_array_equal(
        query.base.weight.detach().numpy(), original["encoder.layer.0.attention.self.query.weight"].numpy()
    )
    assert pickle.loads(pickle.dumps(clf)).predict(REVIEWS).tolist() == clf.predict(REVIEWS).tolist()


def test_lora_changed_after_fit_raises_on_partial_fit(tiny_text_model):
    clf = FineTuneClassifier(tiny_text_model, strategy="full", max_epochs=1, device="cpu", random_state=0)
    clf.fit(REVIEWS, SENTIMENT).set_params(strategy="lora")
    with pytest.raises(ValueError, match="strategy='lora' adapters changed after fitting"):
        clf.partial_fit(REVIEWS, SENTIMENT)


def test_lora_alpha_of_the_same_value_is_no_change(tiny_text_model):
    clf = FineTuneClassifier(
        tiny_text_model, strategy="lora", lora_alpha=16, max_epochs=1, device="cpu", random_state=0
    )
    clf.fit(REVIEWS, SENTIMENT).set_params(lora_alpha=16.0)
    clf.partial_fit(REVIEWS, SENTIMENT)  # 16 and 16.0 scale the adapters alike
    clf.set_params(lora_alpha=8)
    with pytest.raises(ValueError, match=r"adapters changed after fitting.*alpha=8\.0"):
        clf.partial_fit(REVIEWS, SENTIMENT)


def test_lora_on_a_network_without_linear_layers_names_the_alternatives():
    from tests._models import TinyConvNet

    X = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    clf = FineTuneClassifier(TinyConvNet(), strategy="lora", max_epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"strategy='lora'.*strategy='bitfit' or strategy='full'"):
        clf.fit(X, [0, 1, 0, 1])


@pytest.mark.parametrize(
    "make",
    [
        lambda folder: extractor(folder),
        lambda folder: FineTuneClassifier(
            folder, strategy="full", max_epochs=2, device="cpu", random_state=0
        ),
        lambda folder: DomainAdaptedClassifier(model=folder, max_epochs=2, device="cpu", random_state=0),
    ],
    ids=["extractor", "fine-tune", "domain-adapted"],
)
def test_text_estimators_behave_as_sklearn_checks_require(tiny_text_model, make):
    """The text counterparts of sklearn's data checks, which feed numbers (see tests/test_common.py)."""
    from sklearn.exceptions import NotFittedError

    estimator = make(tiny_text_model)
    method = "transform" if hasattr(estimator, "transform") else "predict_proba"
    with pytest.raises(NotFittedError):
        getattr(estimator, method)(REVIEWS)
    texts, labels = list(REVIEWS), list(SENTIMENT)
    assert estimator.fit(texts, labels) is estimator
    assert (texts, labels) == (REVIEWS, SENTIMENT)
    first = getattr(estimator, method)(REVIEWS)
    state = {k: v for k, v in estimator.__dict__.items() if isinstance(v, str | int | float | type(None))}
    np.testing.assert_allclose(getattr(estimator, method)(REVIEWS[::-1]), first[::-1], atol=1e-6)  # order
    np.testing.assert_allclose(getattr(estimator, method)(REVIEWS[2:5]), first[2:5], atol=1e-6)  # subsets
    assert state == {k: v for k, v in estimator.__dict__.items() if k in state}  # methods leave __dict__
    np.testing.assert_allclose(
        getattr(pickle.loads(pickle.dumps(estimator)), method)(REVIEWS), first, atol=1e-6
    )
    np.testing.assert_allclose(getattr(estimator.fit(texts, labels), method)(REVIEWS), first, atol=1e-6)
    assert clone(estimator).get_params()["model"] == tiny_text_model


def test_texts_run_sorted_by_length_so_batches_carry_little_padding(tiny_text_model):
    texts = [" ".join(["good"] * n) for n in (1, 20, 2, 19, 3, 18)]
    fitted = extractor(tiny_text_model, batch_size=2).fit(texts)
    widths = []
    hook = fitted.backbone_.body.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        embeddings = fitted.transform(texts)
    finally:
        hook.remove()
    assert widths == [(2, 22), (2, 20), (2, 4)]  # longest first; in input order it would be 22, 21, 20 wide
    np.testing.assert_allclose(embeddings, reference_embeddings(tiny_text_model, texts), atol=1e-5)


def test_bfloat16_on_text(tiny_text_model):
    import warnings

    float32 = extractor(tiny_text_model).fit(REVIEWS).transform(REVIEWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated (and warned about) on CPUs without native bfloat16
        bfloat16 = extractor(tiny_text_model, precision="bfloat16").fit(REVIEWS).transform(REVIEWS)
    assert bfloat16.dtype == np.float32
    np.testing.assert_allclose(bfloat16, float32, atol=0.1)


def test_lora_adapters_learn_at_the_head_rate_by_default(tiny_text_model):
    clf = FineTuneClassifier(
        tiny_text_model, strategy="lora", max_epochs=1, lr_schedule=None, warmup=0.0, device="cpu"
    )
    clf.fit(REVIEWS, SENTIMENT)
    assert {group["lr"] for group in clf.optimizer_.param_groups} == {clf.lr}
    full = FineTuneClassifier(
        tiny_text_model, strategy="full", max_epochs=1, lr_schedule=None, warmup=0.0, device="cpu"
    )
    assert min(group["lr"] for group in full.fit(REVIEWS, SENTIMENT).optimizer_.param_groups) < full.lr


@pytest.mark.parametrize("estimator", ["fine_tune", "domain_adapted"])
def test_trained_text_models_predict_in_length_order(tiny_text_model, estimator):
    texts = [" ".join(["good"] * n) for n in (1, 20, 2, 19, 3, 18)]
    labels = ["pos", "neg"] * 3
    kind = FineTuneClassifier if estimator == "fine_tune" else DomainAdaptedClassifier
    clf = kind(
        model=tiny_text_model, strategy="full", max_epochs=1, batch_size=2, device="cpu", random_state=0
    ).fit(texts, labels)
    widths = []
    hook = clf.module_.backbone.body.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        proba = clf.predict_proba(texts)
        one_at_a_time = np.vstack([clf.predict_proba([text]) for text in texts])
    finally:
        hook.remove()
    assert widths[:3] == [(2, 22), (2, 20), (2, 4)]  # in input order they would be 22, 21, 20 wide
    np.testing.assert_allclose(proba, one_at_a_time, atol=1e-5)


@pytest.mark.parametrize("pooling", ["avg", "cls"])
def test_a_tokenizer_that_pads_on_the_left_embeds_each_text_as_alone(tmp_path, pooling):
    """Padded on the left, a text's positions shifted with the longest text of its batch (absolute position
    embeddings): its embedding depended on the texts beside it. Texts are padded on the right instead."""
    folder = write_tiny_encoder(tmp_path / "left", pooling="cls_token")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "padding_side": "left"}))
    assert AutoTokenizer.from_pretrained(folder).padding_side == "left"
    texts = ["good", "a long and dull film", "great fun"]
    fitted = extractor(str(folder), pooling=pooling, batch_size=len(texts)).fit(texts)
    together = fitted.transform(texts)
    alone = np.vstack([fitted.transform([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    fitted.preprocess_.tokenizer.padding_side = "left"  # as an extractor pickled before the fix holds it
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.transform(texts), alone, atol=1e-5)


def test_pooling_at_a_layer_that_gives_one_vector_per_text_warns_that_it_is_ignored(tiny_text_model):
    texts = [t for t in REVIEWS if t]
    with pytest.warns(
        IgnoredSettingWarning, match=r"pooling='max' takes effect only .*layer='pooler' gives one"
    ):
        pooled = extractor(tiny_text_model, layer="pooler", pooling="max").fit(texts).transform(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredSettingWarning)
        default = extractor(tiny_text_model, layer="pooler").fit(texts).transform(texts)
        extractor(tiny_text_model, layer="encoder.layer.0.output", pooling="max").fit(texts)  # a sequence
    np.testing.assert_array_equal(pooled, default)  # what the warning says: the setting changed nothing
    with pytest.warns(IgnoredSettingWarning, match="pooling='model'"):  # its normalisation is ignored too
        own = extractor(tiny_text_model, layer="pooler", pooling="model").fit(texts).transform(texts)
    np.testing.assert_array_equal(own, default)
    with pytest.warns(IgnoredSettingWarning, match="pooling='max'"):
        FineTuneClassifier(tiny_text_model, layer="pooler", pooling="max", device="cpu", max_epochs=1).fit(
            REVIEWS, SENTIMENT
        )


def test_cls_pooling_refuses_an_output_shorter_than_a_left_padded_texts_padding():
    from sktransfer._feature_model import FeatureModel
    from sktransfer._runtime import NetworkOutputError
    from sktransfer.texts import TokenBatch

    class FirstTwoTokens(torch.nn.Module):
        def forward(self, batch):
            return torch.ones(len(batch), 2, 3)

    batch = TokenBatch(
        {
            "input_ids": torch.ones(2, 4, dtype=torch.long),
            "attention_mask": torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]),
        }
    )
    with pytest.raises(NetworkOutputError, match="holds none for a text whose padding comes first"):
        FeatureModel(FirstTwoTokens(), pooling="cls")(batch)


def test_loading_an_encoder_once_transformers_is_imported_leaves_the_warning_filters_alone(
    tiny_text_model, monkeypatch
):
    # Each load swapped the process's warning filters (catch_warnings) around an import already done:
    # threads loading encoders at once (Dask's threaded workers) restored each other's filters.
    extractor(tiny_text_model).fit(REVIEWS)

    def swapped(*args, **kwargs):
        raise AssertionError("catch_warnings swapped the process's warning filters")

    watched = types.SimpleNamespace(**{**vars(warnings), "catch_warnings": swapped})
    monkeypatch.setattr(sktransfer.text_encoders, "warnings", watched)
    extractor(tiny_text_model).fit(REVIEWS)
