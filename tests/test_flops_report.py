import json

import numpy as np
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.flops.ledger import ModelShape
from rdistill.flops.audit import count
from rdistill.flops.distributions import sample_lengths


def test_length_distributions():
    ift = [l for l, _ in sample_lengths("ift-like", 4000, seed=1)]
    reasoning = sample_lengths("reasoning-like", 4000, seed=1)
    assert 250 < np.median(ift) < 350
    assert 2500 < np.median([l for l, _ in reasoning]) < 3500
    assert max(l for l, _ in reasoning) <= 32768
    assert all(0 < a < l for l, a in reasoning)


def test_report_numbers_match_a_hand_computation():
    # V=10, d=4, 1 layer, 2 query heads of 2, 1 kv head, d_ff=6, gated; documents of 3 and 5 tokens
    shape = ModelShape(
        vocab_size=10, hidden_size=4, num_layers=1, num_heads_q=2, num_heads_kv=1, head_dim=2,
        intermediate_size=6, gated_mlp=True, params_total=1000, params_non_embedding=960,
    )
    rep = count(shape, [(3, 2), (5, 4)], pack_tokens=8)
    rows = {r["component"]: r for r in rep.table()}
    T = 8
    # 6ND: 6 x 1000 x 8 and 6 x 960 x 8
    assert rows["total"]["six_nd"] == 48000 and rows["total"]["six_nd_non_embedding"] == 46080
    # the paper's forward(l) = 2lVd + (6ld^2 + 2l^2d + 3l^2h + 2l^2d + 2ld^2) + 4ld d_ff + 2ldV, times 3
    paper = 0
    for l in (3, 5):
        paper += 3 * (2 * l * 10 * 4 + (6 * l * 16 + 2 * l * l * 4 + 3 * l * l * 2 + 2 * l * l * 4 + 2 * l * 16)
                      + 4 * l * 4 * 6 + 2 * l * 4 * 10)
    assert rows["total"]["paper"] == paper == 11460
    # exact: projections 3 x [2 T d (hq + 2 hkv) dh + 2 T hq dh d]; MLP 3 x 2 T d d_ff x 3; head 3 x 2 n_loss d V
    assert rows["projections"]["exact"] == 3 * (2 * T * 4 * 4 * 2 + 2 * T * 2 * 2 * 4)
    assert rows["mlp"]["exact"] == 3 * 2 * T * 4 * 6 * 3
    assert rows["lm_head"]["exact"] == 3 * 2 * 6 * 4 * 10
    assert rows["attention"]["exact"] == 3 * 4 * 2 * 2 * (6 + 15)


def test_cli_shows_flop_counter_agreeing_with_the_ledger():
    res = CliRunner().invoke(app, ["flops", "--num-docs", "60", "--max-packs", "1", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    fc = r["flop_counter"]
    assert abs(fc["measured"]["flop_counter"] - fc["ledger_executed"]["executed"]) <= 1e-3 * fc["ledger_executed"]["executed"]
    assert {"exact", "paper"} == set(r["inference"]) - {"prompt_tokens", "generated_tokens"}
    total = r["rows"][-1]
    assert total["exact"] <= total["executed"]


def test_cli_counts_a_paper_shape_without_building_it():
    res = CliRunner().invoke(app, ["flops", "--model", "qwen2.5-0.5b", "--lengths", "reasoning-like", "--num-docs", "200", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["parameters"]["total"] == 494032768 and r["flop_counter"] is None
