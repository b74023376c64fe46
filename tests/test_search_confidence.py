"""The search page's low-confidence cue: its floor is the 95th percentile of the best scores that fixed random
word strings reach on the index (checked one query at a time against the batched calibration, and by a hand
count), a query no better than that gets the cue, and a caption whose video matches it gets none."""
import shutil

import numpy as np
import pytest

from apps.search_confidence import PERCENTILE, PROBES, probe_texts, score_floor
from apps.search_service import SearchService
from apps.video_index import write_shard
from models.tokenizer import ClipTokenizer
from tests.test_retrieval import retriever

CAPTION = "a red circle moves from left to right"
ABSURD = "zebra invoice thunderstorm recipe"


def match_caption(r, rel, caption):
    """Make the indexed video ``rel`` match ``caption`` as a model that learnt it would: a newer shard records
    the caption's own text feature as the video's feature (the newest record of a path wins)."""
    gallery = r.gallery
    write_shard(gallery.folder, [(gallery.stamps[gallery.position(rel)], r.encode_texts([caption])[0])], [])
    r.open(gallery.folder)


@pytest.fixture(scope="module")
def indexed(gallery, transformer, tmp_path_factory):
    root = tmp_path_factory.mktemp("confidence")
    shutil.copytree(gallery, root / "videos")
    r = retriever(transformer)
    r.index(root / "videos", root / "index", progress=False)
    return r


def test_probes_are_fixed_random_vocabulary_words():
    tokenizer = ClipTokenizer()
    probes, vocabulary = probe_texts(tokenizer), set(tokenizer.words())
    assert probes == probe_texts(tokenizer) and len(set(probes)) == PROBES == 128
    assert all(3 <= len(p.split()) <= 8 and set(p.split()) <= vocabulary for p in probes)
    assert probe_texts(tokenizer, seed=1) != probes


def test_floor_is_the_percentile_of_the_probes_best_scores(indexed):
    floor = score_floor(indexed)
    best = [indexed.search(p, k=1)[0][0].score for p in probe_texts(indexed.tokenizer)]  # one query at a time
    assert floor.threshold == pytest.approx(np.percentile(best, PERCENTILE), abs=1e-5) and floor.percentile == 95
    # 128 distinct values: the 95th percentile lies between the 121st and 122nd smallest (position 0.95 * 127).
    assert len(set(np.round(best, 6))) == 128 and sum(floor.low(b) for b in best) == 121


def test_absurd_query_gets_the_cue_and_a_matching_caption_does_not(indexed):
    match_caption(indexed, "video0.mp4", CAPTION)
    service = SearchService(indexed)
    matched = service.search(CAPTION, 5)
    assert matched["results"][0]["video"] == "video0.mp4" and matched["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    assert matched["low_confidence"] is False and matched["score_floor"]["threshold"] == service.floor.threshold < 0.8
    absurd = service.search(ABSURD, 5)
    assert absurd["low_confidence"] is True and absurd["results"][0]["score"] < service.floor.threshold - 0.05
    # Fresh random strings (another seed) are meaningless too: about 95 in 100 get the cue (binomial sd 2.2).
    fresh = [service.search(p, 1)["low_confidence"] for p in probe_texts(indexed.tokenizer, 100, seed=1)]
    assert sum(fresh) >= 80, sum(fresh)
    assert service.info()["score_floor"] == {"threshold": service.floor.threshold, "percentile": 95.0, "probes": 128}


def test_an_index_without_videos_has_no_floor_and_no_cue(transformer, tmp_path):
    """Every file failed to decode: the page still starts, answers with no results and flags nothing."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    r = retriever(transformer)
    report = r.index(tmp_path / "videos", tmp_path / "index", progress=False)
    assert (report.total, len(report.failed)) == (0, 1)
    service = SearchService(r)
    assert service.info()["score_floor"] == {"threshold": None, "percentile": 95.0, "probes": 0}
    answer = service.search(CAPTION, 5)
    assert answer["results"] == [] and answer["low_confidence"] is False
