"""The retrieval control's core (synscale.data.retrieval) against brute force: top-k by cosine similarity over a
chunked pool, near-duplicates of the evaluation sets, and each pool image used once."""

from __future__ import annotations

import numpy as np

from synscale.data.retrieval import assign, near_duplicates, top_k


def _brute(queries, pool, k, keep=None):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    p = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    s = q @ p.T
    if keep is not None:
        s[:, ~keep] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, 1)


def test_top_k_over_chunks_is_the_brute_force_search():
    rng = np.random.default_rng(0)
    pool, queries = rng.normal(size=(1000, 16)), rng.normal(size=(7, 16))
    keep = rng.random(1000) > 0.3
    for chunk in (64, 333, 5000):  # blocks smaller than k, uneven, and the whole pool at once
        idx, sims = top_k(queries, pool, 20, keep=keep, chunk=chunk)
        want_i, want_s = _brute(queries, pool, 20, keep)
        assert np.array_equal(idx, want_i) and np.allclose(sims, want_s, atol=1e-5)
        assert keep[idx].all()
    idx, sims = top_k(queries, pool[:5], 8, chunk=2)  # fewer candidates than k: the rest is -1
    assert (idx[:, 5:] == -1).all() and np.isinf(sims[:, 5:]).all() and (idx[:, :5] >= 0).all()


def test_near_duplicates_of_the_evaluation_sets_are_found():
    rng = np.random.default_rng(1)
    pool, test = rng.normal(size=(500, 32)), rng.normal(size=(50, 32))
    pool[[3, 77, 420]] = test[[0, 10, 49]] * 2.0 + rng.normal(0, 0.01, (3, 32))  # rescaled copies, slightly noisy
    mask = near_duplicates(pool, test, 0.99, chunk=128)
    p = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    t = test / np.linalg.norm(test, axis=1, keepdims=True)
    assert np.array_equal(mask, (p @ t.T).max(1) >= 0.99) and sorted(np.flatnonzero(mask)) == [3, 77, 420]


def test_each_pool_image_goes_to_one_class_best_first_within_quotas():
    # two queries of class 0, one of class 1, all wanting pool rows 5 and 6; row 5 is closest to the class-1 query
    indices = np.array([[6, 5], [6, 5], [5, 6]])
    sims = np.array([[0.9, 0.5], [0.8, 0.4], [0.95, 0.7]])
    got = assign(indices, sims, np.array([0, 0, 1]), {0: 2, 1: 1})
    assert got == {0: [6], 1: [5]}
    got = assign(indices, sims, np.array([0, 0, 1]), {0: 0, 1: 2})
    assert got == {0: [], 1: [5, 6]}


def test_queries_in_blocks_give_the_same_answer(monkeypatch):
    import synscale.data.retrieval as r

    rng = np.random.default_rng(2)
    pool, queries = rng.normal(size=(300, 8)), rng.normal(size=(50, 8))
    whole = top_k(queries, pool, 5, chunk=100)
    monkeypatch.setattr(r, "QUERY_CHUNK", 7)  # 50 queries in 8 blocks
    blocks = top_k(queries, pool, 5, chunk=100)
    assert np.array_equal(whole[0], blocks[0]) and np.allclose(whole[1], blocks[1])
    assert top_k(queries[:0], pool, 5)[0].shape == (0, 5)
