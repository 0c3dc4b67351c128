"""NegLabel negatives: lexicons, mining, collisions, caching and the score, on tiny models."""

from __future__ import annotations

import shutil
from collections import OrderedDict

import pytest
import torch
from conftest import write_tiny_model

from croft_core.clip import backbones

from croft_core.ood import negatives
from croft_core.clip.backbones import load_backbone
from croft_core.ood.negatives import (DEFAULT_NEG_THRESHOLD, LEXICON_FILE, Lexicon, LexiconError, NegativeLabels,
                                  generic_words, lexicon_path, mine_negatives, read_lexicon)

WORDS = ["pentagon", "cat, house cat", "violin", "glacier", "teapot", "dog", "bicycle", "comet", "lantern",
         "orchid", "anvil", "kayak", "volcano", "harp", "sparrow", "tractor", "meteor", "saddle", "trumpet",
         "iceberg"]


@pytest.fixture(scope="module")
def lexicon_backbone(tmp_path_factory):
    """A tiny model folder with its own lexicon.txt (a property of the backbone)."""
    folder = tmp_path_factory.mktemp("lexicon_model") / "model"
    spec = write_tiny_model(folder, seed=3)
    (folder / LEXICON_FILE).write_text("# test lexicon\n" + "\n".join(WORDS) + "\n")
    return load_backbone(spec)


def test_read_lexicon_formats(tmp_path):
    path = tmp_path / "lex.txt"
    path.write_text("n001\torganism, being\n\n# comment\nn002\tbenthos\nBenthos\nstar_fish, sea star\n")
    lex = read_lexicon(path)
    assert lex.entries == (("organism", "being"), ("benthos",), ("star_fish", "sea star"))
    assert lex.words == ("organism", "benthos", "star_fish") and len(lex) == 3
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(LexiconError, match="holds no word"):
        read_lexicon(tmp_path / "empty.txt")
    with pytest.raises(LexiconError, match="does not exist"):
        read_lexicon(tmp_path / "missing.txt")


def test_lexicon_is_a_property_of_the_backbone(lexicon_backbone, tmp_path):
    assert lexicon_path(lexicon_backbone).name == LEXICON_FILE
    plain = load_backbone(write_tiny_model(tmp_path / "plain", seed=5, lexicon=False))
    timm_file = lexicon_path(plain)  # no lexicon.txt next to it: timm's ImageNet-21k lemmas
    assert timm_file.name == "imagenet_synset_to_lemma.txt" and timm_file.is_file()
    assert len(read_lexicon(timm_file)) > 15_000


def test_mining_keeps_the_farthest_by_a_high_percentile():
    labels = torch.eye(4)[:2]  # two labels on axes 0 and 1
    candidates = torch.stack([
        torch.tensor([0.0, 0.0, 1.0, 0.0]),  # 0: far from both
        torch.tensor([0.9, -0.6, 0.3, 0.0]),  # 1: close to label 0 only (mean closeness is low)
        torch.tensor([0.3, 0.3, 0.9, 0.0]),  # 2: a little close to both
        torch.tensor([0.0, 0.0, 0.0, 1.0]),  # 3: far from both
    ])
    assert mine_negatives(labels, candidates, 2).tolist() == [0, 3]
    assert mine_negatives(labels, candidates, 3).tolist() == [0, 3, 2]  # 1 is the closest at the 95th
    with pytest.raises(LexiconError, match="cannot keep 5 negative labels out of 4"):
        mine_negatives(labels, candidates, 5)


def test_mining_uses_the_95th_percentile_not_the_maximum():
    """With three labels the 95th percentile and the maximum rank candidates differently."""
    labels = torch.eye(5)[:3]
    a = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0])  # cosines [.5, .5, .5]: 95th = max = 0.5
    b = torch.tensor([0.0, 0.0, 0.52, (1 - 0.52 ** 2) ** 0.5, 0.0])  # [0, 0, .52]: 95th 0.468, max 0.52
    candidates = torch.stack([a, b])
    assert mine_negatives(labels, candidates, 1).tolist() == [1]  # the official 0.95: b is farther
    assert mine_negatives(labels, candidates, 1, percentile=1.0).tolist() == [0]
    assert mine_negatives(labels, candidates, 2).tolist() == [1, 0]


def test_fit_removes_class_names_and_reports_them(lexicon_backbone, tmp_path):
    negs = NegativeLabels.fit(lexicon_backbone, ["Cat", "violin", "unicorn"], num_negatives=10, n_groups=4,
                              min_group=2, cache_dir=tmp_path)
    assert negs.removed == ("Cat", "violin")  # "cat, house cat" matches through its first synonym
    assert not {"cat", "violin"} & set(negs.words) and len(negs.words) == 10
    assert negs.embeddings.shape == (10, 16) and negs.id_embeddings.shape == (3, 16)
    assert negs.groups.shape == (4, 2) and len(set(negs.groups.flatten().tolist())) == 8
    default = NegativeLabels.fit(lexicon_backbone, ["Cat", "violin", "unicorn"], cache_dir=tmp_path)
    assert len(default.words) == 18 and default.groups.shape == (1, 18)  # fewer than 10,000: all, one group
    assert "18 usable words, fewer than the paper's 10,000: all are used" in default.settings()["note"]
    few = NegativeLabels.fit(lexicon_backbone, ["dog"], num_negatives=7, n_groups=100, min_group=3, cache_dir=tmp_path)
    assert few.groups.shape == (2, 3)  # G = 7 // 3, the remainder dropped


def test_fit_errors(lexicon_backbone, tmp_path):
    with pytest.raises(LexiconError, match="has 19 usable words .* fewer than the 20"):
        NegativeLabels.fit(lexicon_backbone, ["dog"], num_negatives=20, cache_dir=None)
    with pytest.raises(LexiconError, match="vocabulary is empty"):
        NegativeLabels.fit(lexicon_backbone, [], cache_dir=None)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(LexiconError, match="holds no word"):
        NegativeLabels.fit(lexicon_backbone, ["dog"], lexicon=tmp_path / "empty.txt", cache_dir=None)
    only_classes = Lexicon((("dog",), ("cat",)), "two words")
    with pytest.raises(LexiconError, match="has 0 usable words"):
        NegativeLabels.fit(lexicon_backbone, ["dog", "cat"], lexicon=only_classes, cache_dir=None)


def test_negative_embeddings_are_cached_on_disk_and_in_memory(lexicon_backbone, tmp_path, monkeypatch):
    calls = []
    real = backbones.encode_text_truncated
    monkeypatch.setattr(backbones, "encode_text_truncated", lambda m, t: calls.append(len(t)) or real(m, t))
    monkeypatch.setattr(negatives, "_memo", OrderedDict())
    first = NegativeLabels.fit(lexicon_backbone, ["dog", "harp"], cache_dir=tmp_path)
    assert sum(calls) == len(WORDS) + 2  # the lexicon once, the vocabulary once
    calls.clear()
    negatives._memo.clear()  # a new process: only the disk cache is left
    second = NegativeLabels.fit(lexicon_backbone, ["dog", "harp"], cache_dir=tmp_path)
    other_vocab = NegativeLabels.fit(lexicon_backbone, ["comet"], cache_dir=tmp_path)
    assert calls == [1]  # warm: only the new vocabulary's one name is encoded
    assert second.words == first.words and torch.equal(second.embeddings, first.embeddings)
    assert other_vocab.words != first.words
    calls.clear()
    NegativeLabels.fit(lexicon_backbone, ["anvil", "kayak"], cache_dir=None)
    assert calls == [2]  # no disk cache, but the lexicon is still in memory


def test_score_accepts_labels_and_rejects_negatives(lexicon_backbone):
    negs = NegativeLabels.fit(lexicon_backbone, ["dog", "harp", "kayak"], num_negatives=6, n_groups=3,
                              cache_dir=None)
    images = torch.cat([negs.id_embeddings, negs.embeddings[[2, 4]]]) * 3.0  # scale does not matter
    scores, nearest = negs.score(images)
    assert scores.shape == (5,) and ((scores > 0) & (scores < 1)).all()
    assert negs.accept(scores).tolist() == [True, True, True, False, False]
    assert nearest[3:].tolist() == [2, 4]
    assert negs.words[int(nearest[3])] not in ("dog", "harp", "kayak")


def test_text_map_applies_to_labels_and_negatives(lexicon_backbone):
    w = torch.eye(16) + 0.3 * torch.randn(16, 16, generator=torch.Generator().manual_seed(0))

    def adapt(t):
        return torch.nn.functional.normalize(t @ w.T, dim=-1)

    plain = NegativeLabels.fit(lexicon_backbone, ["dog", "harp"], num_negatives=5, cache_dir=None)
    mapped = NegativeLabels.fit(lexicon_backbone, ["dog", "harp"], adapt, num_negatives=5, cache_dir=None)
    assert mapped.words == plain.words  # mining reads the CLIP text space, the map changes the scoring
    torch.testing.assert_close(mapped.embeddings, adapt(plain.raw))
    torch.testing.assert_close(mapped.id_embeddings, adapt(plain.raw_id))
    torch.testing.assert_close(mapped.with_text_map(None).embeddings, plain.embeddings)


def test_missing_own_lexicon_falls_back_to_timm(tmp_path):
    folder = tmp_path / "model"
    write_tiny_model(folder, seed=4, lexicon=False)
    backbone = load_backbone(f"local-dir:{folder}")
    assert lexicon_path(backbone).name == "imagenet_synset_to_lemma.txt"
    shutil.copy(lexicon_path(backbone), folder / LEXICON_FILE)
    assert lexicon_path(backbone) == folder / LEXICON_FILE


def test_a_lexicon_can_set_its_own_fraction(tmp_path, lexicon_backbone):
    (tmp_path / "lexicon.txt").write_text("\n".join(WORDS))
    assert read_lexicon(tmp_path / "lexicon.txt").fraction is None
    (tmp_path / "neglabel.json").write_text('{"fraction": 0.5, "note": "a closed world"}')
    lex = read_lexicon(tmp_path / "lexicon.txt")
    assert lex.fraction == 0.5
    negs = NegativeLabels.fit(lexicon_backbone, ["dog", "harp"], lexicon=lex, cache_dir=None)
    assert len(negs.words) == 9  # half of the 18 words left
    assert len(NegativeLabels.fit(lexicon_backbone, ["dog", "harp"], lexicon=lex, fraction=0.25,
                                  cache_dir=None).words) == 4
    for bad in ('{"fraction": 0}', '{"fraction": 0.5, "fractoin": 1}', "not json", '{"generic_share": 1.5}',
                '{"threshold": 0}', '{"threshold": true}', '[0.5]'):
        (tmp_path / "neglabel.json").write_text(bad)
        with pytest.raises(LexiconError, match="neglabel.json"):
            read_lexicon(tmp_path / "lexicon.txt")


def test_generic_words_are_the_closest_to_the_rest_of_the_lexicon():
    axes = torch.eye(4)
    hypernym = torch.nn.functional.normalize(torch.ones(4), dim=0)  # as close to every concept
    lexicon = torch.cat([axes, hypernym[None], 0.5 * axes[:1] + torch.tensor([[0.0, 0.0, 0.0, 0.1]])])
    assert generic_words(lexicon, 1 / 6).tolist() == [4]
    assert generic_words(lexicon, 2 / 6).tolist() == [4, 5]  # 5 leans to axis 0 and 3: next most generic
    assert generic_words(lexicon, 0.0).numel() == 0 and generic_words(lexicon[:1], 1.0).numel() == 0


def test_a_lexicon_can_set_aside_its_generic_words_and_its_threshold(tmp_path, lexicon_backbone):
    (tmp_path / "lexicon.txt").write_text("\n".join(WORDS))
    plain = NegativeLabels.fit(lexicon_backbone, ["dog"], lexicon=tmp_path / "lexicon.txt", fraction=1.0,
                               cache_dir=None)
    assert plain.generic == () and plain.threshold == DEFAULT_NEG_THRESHOLD and len(plain.words) == 19
    (tmp_path / "neglabel.json").write_text('{"fraction": 1.0, "generic_share": 0.25, "threshold": 0.2}')
    lex = read_lexicon(tmp_path / "lexicon.txt")
    negs = NegativeLabels.fit(lexicon_backbone, ["dog"], lexicon=lex, cache_dir=None)
    embeddings = negatives.encode_lexicon(lexicon_backbone, lex, cache_dir=None)
    expected = tuple(lex.words[i] for i in generic_words(embeddings, 0.25).tolist())
    assert len(negs.generic) == 5 and negs.generic == expected
    assert not set(negs.generic) & set(negs.words) and len(negs.words) == 19 - 5  # "dog" is a class name
    assert negs.threshold == 0.2 and negs.accept([0.19, 0.2]).tolist() == [False, True]
    other = NegativeLabels.fit(lexicon_backbone, ["harp", "comet"], lexicon=lex, cache_dir=None)
    assert other.generic == negs.generic  # set aside for every vocabulary alike
    explicit = NegativeLabels.fit(lexicon_backbone, ["dog"], lexicon=lex, generic_share=0.0, threshold=0.5,
                                  cache_dir=None)
    assert explicit.generic == () and explicit.threshold == 0.5 and len(explicit.words) == 19


def test_lexicon_label_names_no_server_path(tmp_path):
    from croft_core.ood.negatives import TIMM_LEXICON, lexicon_label

    assert lexicon_label(tmp_path.joinpath("site-packages", "timm", *TIMM_LEXICON)) == "timm ImageNet-21k lemmas"
    label = lexicon_label(tmp_path / "embedded" / "lexicon.txt")
    assert label == "embedded/lexicon.txt" and str(tmp_path) not in label


# ---- the paper's numbers, the group average and the mining, on constructed cases ------------------

def _unit(*cosines: float, d: int = 8) -> torch.Tensor:
    """A unit vector with the given cosines to the first axes (the rest of its norm on the last axis)."""
    v = torch.zeros(d)
    v[:len(cosines)] = torch.tensor(cosines)
    v[-1] = (1 - float((v ** 2).sum())) ** 0.5
    return v


def _constructed(monkeypatch, labels: torch.Tensor, candidates: torch.Tensor, **fit):
    """NegativeLabels.fit on hand-made label and lexicon embeddings (no text encoder involved)."""
    monkeypatch.setattr(negatives, "build_text_classifier", lambda *a, **k: labels)
    lexicon = Lexicon(tuple((f"w{i}",) for i in range(len(candidates))), "constructed")
    return NegativeLabels.fit(None, ["x", "y", "z"][:len(labels)], lexicon=lexicon, lexicon_embeddings=candidates,
                              cache_dir=None, **fit)


@pytest.mark.parametrize("size, kept, groups", [(25_000, 10_000, (100, 100)), (5_000, 5_000, (50, 100)),
                                                (150, 150, (1, 150))])
def test_default_is_the_papers_count_and_groups(monkeypatch, size, kept, groups):
    """The paper keeps 10,000 negatives in 100 groups of 100; a smaller lexicon gives all its words,
    in groups never smaller than the paper's 100 (one group under 200)."""
    candidates = torch.nn.functional.normalize(torch.randn(size, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    negs = _constructed(monkeypatch, torch.eye(8)[:2], candidates)
    assert len(negs.words) == kept and tuple(negs.groups.shape) == groups
    assert len(set(negs.groups.flatten().tolist())) == groups[0] * groups[1]  # no negative twice
    numbers = negs.settings()
    assert (numbers["num_negatives"], numbers["groups"], numbers["group_size"]) == (kept, *groups)
    assert (numbers["note"] == "the paper's numbers") == (size >= 10_000)
    assert negatives.OFFICIAL["num_negatives"] == 10_000 and negatives.OFFICIAL["groups"] == 100
    lexicon = Lexicon(tuple((f"w{i}",) for i in range(size)), "constructed")
    plan = negatives.planned_numbers(lexicon, ["x", "y"])  # the same numbers without encoding
    assert (plan["num_negatives"], plan["groups"], plan["group_size"]) == (kept, *groups)


def test_timm_lexicon_gets_the_papers_numbers():
    """Real CLIPs (timm's 20,071 lemmas): the paper's 10,000 negatives in 100 groups of 100."""
    plan = negatives.planned_numbers(read_lexicon(negatives.timm_lexicon_path()), ["cat", "dog"])
    assert (plan["num_negatives"], plan["groups"], plan["group_size"], plan["threshold"]) == (10_000, 100, 100, 0.01)


def test_paper_settings_ignore_the_lexicons_own(monkeypatch):
    candidates = torch.nn.functional.normalize(torch.randn(300, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    monkeypatch.setattr(negatives, "build_text_classifier", lambda *a, **k: torch.eye(8)[:2])
    own = Lexicon(tuple((f"w{i}",) for i in range(300)), "own", fraction=0.5, generic_share=0.3, threshold=0.1)
    kw = dict(lexicon=own, lexicon_embeddings=candidates, cache_dir=None)
    lexicon = NegativeLabels.fit(None, ["x", "y"], **kw)
    paper = NegativeLabels.fit(None, ["x", "y"], settings="paper", **kw)
    assert (len(lexicon.words), len(lexicon.generic), lexicon.threshold) == (105, 90, 0.1)  # 0.5 of 210
    assert (len(paper.words), len(paper.generic), paper.threshold) == (300, 0, DEFAULT_NEG_THRESHOLD)
    assert paper.settings()["settings"] == "paper" and tuple(paper.groups.shape) == (3, 100)
    with pytest.raises(LexiconError, match="settings must be one of"):
        NegativeLabels.fit(None, ["x"], settings="official", **kw)


def test_fit_keeps_the_farthest_words_by_the_95th_percentile(monkeypatch):
    """Three labels, six words whose order differs by the 95th percentile, the maximum and the mean
    of their cosines to the labels: the four farthest by the 95th percentile are known."""
    words = {  # cosines to the 3 labels -> (95th percentile, max, mean)
        "A": (0.5, 0.5, 0.5),  # .5, .5, .5
        "B": (0.0, 0.0, 0.52),  # .468, .52, .173
        "C": (0.45, 0.45, 0.45),  # .45, .45, .45
        "D": (0.0, 0.4, 0.4),  # .4, .4, .267
        "E": (-0.5, -0.5, 0.6),  # .49, .6, -.133
        "F": (0.2, 0.2, 0.2),  # .2, .2, .2
    }
    candidates = torch.stack([_unit(*c) for c in words.values()])
    negs = _constructed(monkeypatch, torch.eye(8)[:3], candidates, num_negatives=4)
    names = dict(zip((f"w{i}" for i in range(6)), words))
    assert [names[w] for w in negs.words] == ["F", "D", "C", "B"]  # the maximum would keep A, the mean E
    assert negs.percentile == 0.95


def test_score_is_the_mean_over_groups(monkeypatch):
    """One image, two groups of two negatives: the score is the mean of the two groups' ratios, not
    the ratio against all four negatives."""
    import math

    labels = torch.eye(8)[:2]
    candidates = torch.stack([_unit(0, 0, 0.9), _unit(0, 0, 0, 0.1), _unit(0, 0, 0, 0, 0.5), _unit(0, 0, 0, 0, 0, -0.2)])
    negs = _constructed(monkeypatch, labels, candidates, num_negatives=4, n_groups=2, min_group=2, temperature=0.1)
    image = _unit(0.8, 0.1, 0.3, 0.2, 0.1, 0.1).unsqueeze(0)
    cos_id = (image @ labels.T)[0]
    cos_neg = {w: float(image[0] @ candidates[int(w[1:])]) for w in negs.words}
    pos = float(torch.exp(cos_id / 0.1).sum())
    per_group = [pos / (pos + sum(math.exp(cos_neg[negs.words[i]] / 0.1) for i in g)) for g in negs.groups.tolist()]
    whole = pos / (pos + sum(math.exp(c / 0.1) for c in cos_neg.values()))
    score, nearest = negs.score(image)
    assert float(score) == pytest.approx(sum(per_group) / 2, rel=1e-5)
    assert abs(float(score) - whole) > 0.01  # the grouping matters on this case
    assert negs.words[int(nearest)] == max(cos_neg, key=cos_neg.get)


# ---- one scoring path: the app and evaluate ------------------------------------------------------

@pytest.mark.parametrize("head", ["zeroshot", "croft"])
def test_app_and_evaluate_give_identical_negative_label_scores(lexicon_backbone, head):
    """The app's verdict score (decision.negative_evidence) and evaluate's ``neglabel`` score
    (compute_scores) are one path: identical on the same images, model and classes, also for a head
    with its own template set and text map (the app once used one template for the ID side)."""
    from croft_app.service.classifier import OpenSetClassifier
    from croft_app.service.decision import negative_evidence
    from croft_core.heads.checkpoint import CroftModel, HeadConfig
    from croft_core.runs.evaluate import compute_scores, text_map

    torch.manual_seed(0)
    classes = ["dog", "harp", "kayak"]
    model = CroftModel(HeadConfig(head=head, embed_dim=lexicon_backbone.embed_dim, logit_scale=20.0,
                                  templates=("a photo of a {}.", "a drawing of a {}.")))
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    classifier = OpenSetClassifier(lexicon_backbone, model, cache_dir=None)
    features = torch.randn(6, lexicon_backbone.embed_dim)
    raw = NegativeLabels.fit(lexicon_backbone, classes, num_negatives=8, n_groups=2, min_group=4, cache_dir=None)
    mapped = NegativeLabels.fit(lexicon_backbone, classes, None if head == "zeroshot" else text_map(model),
                                num_negatives=8, n_groups=2, min_group=4, cache_dir=None)  # as NegativeRules fits
    scored = classifier.run([], classes, features=features)  # the app's one pass: text features included
    app, _ = negative_evidence(classifier.model, mapped, features, scored.text_features)
    _, scores = compute_scores(model, features, classifier.text_features(classes), negatives=raw)
    assert app == pytest.approx(scores["neglabel"].tolist(), abs=1e-6)
    single = raw.with_text_map(text_map(model)).score(model.embed_image(features))[0]  # the old, one template
    assert not torch.allclose(single, torch.tensor(app, dtype=single.dtype), atol=1e-4)
