"""`retrieve.py search --itm_rerank K` on a DGL-BLIP index (tiny random BLIP, six videos): ITM re-scores each
query's top K with tokens recomputed from the files, as evaluation scores them; the refusals."""
import json
import os
from pathlib import Path

import pytest
import torch

import retrieve
from apps.retrieval import Retriever
from apps.search_service import SearchService, ServiceConfig
from dataloaders.frames import read_eval_frames
from models.backbones import get_tokenizer
from models.checkpoint import atomic_save, compact_checkpoint
from models.dgl import DGLConfig
from models.factory import create_model
from tests.blip_files import SIZE, TEST_PAIRS, make_pairs_msrvtt, write_hf_folder

pytestmark = pytest.mark.filterwarnings("ignore::models.blip.BlipTemperatureWarning")
FRAMES, WORDS, K = 4, 16, 4
QUERIES = [TEST_PAIRS["video3"], TEST_PAIRS["video0"]]
TARGET_RANK = {0: 3, 1: 2}  # per query, the 0-based ITC rank of the video the crafted ITM head prefers
MATCH, NO_MATCH = 10.0, -10.0


@pytest.fixture(scope="module")
def blip_index(tmp_path_factory):
    """A full-fine-tuning DGL-BLIP checkpoint whose ITM head is solved so that, for each query, the video at
    ``TARGET_RANK`` of its ITC ranking scores ``MATCH`` and the rest of its top K ``NO_MATCH``; its index."""
    root = tmp_path_factory.mktemp("itm_search")
    cfg = make_pairs_msrvtt(root / "data")
    write_hf_folder(root / "blip", SIZE)
    torch.manual_seed(0)
    config = DGLConfig(model="dgl_blip", backbone="blip", max_frames=FRAMES, global_prompt_length=2,
                       train_backbone=True)
    model = create_model("blip", str(root / "blip"), dgl_config=config).model.eval()
    paths = sorted(cfg.features_path.glob("*.mp4"))
    tokenizer = get_tokenizer("blip", model.clip)
    with torch.no_grad():
        videos = [model.encode_video_with_tokens(read_eval_frames(p, FRAMES, SIZE.resolution)[0][None]) for p in paths]
        ids, mask = tokenizer(QUERIES, WORDS)
        sim = model.encode_text(ids) @ torch.cat([v for v, _ in videos]).t()
        itc_order = sim.argsort(dim=1, descending=True)
        # The multimodal [ENC] state of each (query, top-K video) pair, one pair at a time.
        rows, wanted = [], []
        for q in range(len(QUERIES)):
            for rank, j in enumerate(itc_order[q, :K].tolist()):
                itm_ids = tokenizer.for_itm(ids[q : q + 1])
                rows.append(model.clip.text_encoder(itm_ids, mask[q : q + 1], videos[j][1])[0, 0])
                wanted.append(MATCH if rank == TARGET_RANK[q] else NO_MATCH)
        weight = torch.linalg.lstsq(torch.stack(rows).double(), torch.tensor(wanted).double()).solution.float()
        head = model.clip.itm_head
        head.weight.zero_(), head.bias.zero_()
        head.weight[1] = weight
    ckpt, index = root / "itm.pt", root / "index"
    atomic_save(compact_checkpoint(model, {"name": str(root / "blip")}), ckpt)
    assert retrieve.main(["index", "--videos", str(cfg.features_path), "--checkpoint", str(ckpt), "--out", str(index),
                          "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    return index, paths, sim, itc_order


def search(index, capsys, *flags: str) -> dict:
    capsys.readouterr()
    assert retrieve.main(["search", "--index", str(index), *QUERIES, "--top_k", "6", "--json", "--device", "cpu",
                          "--max_words", str(WORDS), "--workers", "0", "--batch_size", "2", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def names(results) -> list[str]:
    return [Path(r["path"]).name for r in results]


def test_itm_rerank_moves_the_preferred_video_to_rank_1(blip_index, capsys):
    index, paths, sim, itc_order = blip_index
    plain = search(index, capsys)
    assert plain["ranking"] == "DGL-BLIP ITC"
    answer = search(index, capsys, "--itm_rerank", str(K))
    assert answer["ranking"] == f"DGL-BLIP ITC + ITM re-rank of the top {K}"
    for q, (before, after) in enumerate(zip(plain["queries"], answer["queries"])):
        itc = [paths[j].name for j in itc_order[q]]
        assert names(before["results"]) == itc and all(r["rerank"] is None for r in before["results"])
        target = itc[TARGET_RANK[q]]
        # The preferred video first, the rest of the top K in ITC order (equal ITM scores), then ranks K+1.. as ITC.
        assert names(after["results"]) == [target] + [n for n in itc[:K] if n != target] + itc[K:]
        cosine = {paths[j].name: float(sim[q, j]) for j in range(len(paths))}
        for r in after["results"]:
            name = Path(r["path"]).name
            assert r["score"] == pytest.approx(cosine[name], abs=1e-4)
            if name in itc[:K]:  # evaluation's rule: ITM match logit + cosine
                assert r["rerank"] == pytest.approx((MATCH if name == target else NO_MATCH) + cosine[name], abs=1e-3)
            else:
                assert r["rerank"] is None


def test_text_output_names_the_ranking(blip_index, capsys):
    index = blip_index[0]
    capsys.readouterr()
    assert retrieve.main(["search", "--index", str(index), QUERIES[0], "--device", "cpu", "--workers", "0",
                          "--max_words", str(WORDS), "--itm_rerank", "2", "--top_k", "3"]) == 0
    out = capsys.readouterr().out
    assert "ranking: DGL-BLIP ITC + ITM re-rank of the top 2" in out and " re-rank  video" in out
    assert out.strip().splitlines()[-1].split()[3] == "-"  # rank 3 lies past the re-ranked two


def test_search_page_reranks_through_the_same_function(blip_index, capsys):
    index = blip_index[0]
    cli = search(index, capsys, "--itm_rerank", str(K))["queries"][0]["results"]
    retriever = Retriever.from_index(index, device="cpu", workers=0, max_words=WORDS)
    service = SearchService(retriever, ServiceConfig(itm_rerank=K))
    answer = service.search(QUERIES[0], 6)
    assert service.info()["ranking"] == f"DGL-BLIP ITC + ITM re-rank of the top {K}"
    assert [r["video"] for r in answer["results"]] == names(cli)
    page = [r["rerank"] for r in answer["results"]]
    assert [r is None for r in page] == [r["rerank"] is None for r in cli] == [False] * K + [True] * (6 - K)
    assert page[:K] == pytest.approx([r["rerank"] for r in cli[:K]], abs=1e-5)


@pytest.mark.parametrize("flags, message", [
    ([QUERIES[0], "--itm_rerank", "0"], "--itm_rerank 0: give K >= 1"),
    ([QUERIES[0], "--itm_rerank", "-3"], "--itm_rerank -3: give K >= 1"),
    (["--video", "a.mp4", "--captions", "c.txt", "--itm_rerank", "2"],
     "--itm_rerank re-ranks the videos of text queries: drop it with --video"),
])
def test_what_cannot_rerank_is_refused_in_one_line(blip_index, capsys, flags, message):
    capsys.readouterr()
    assert retrieve.main(["search", "--index", str(blip_index[0]), "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_changed_video_is_refused(blip_index, capsys, tmp_path):
    """A video re-written after indexing would be scored by ITM as another video than its stored feature."""
    index, paths, _, itc_order = blip_index
    top = paths[int(itc_order[0, 0])]
    stat = top.stat()
    try:
        os.utime(top, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        capsys.readouterr()
        assert retrieve.main(["search", "--index", str(index), QUERIES[0], "--device", "cpu", "--workers", "0",
                              "--max_words", str(WORDS), "--itm_rerank", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{top}: changed or gone since it was indexed" in err and len(err.splitlines()) == 1
    finally:
        os.utime(top, ns=(stat.st_atime_ns, stat.st_mtime_ns))
