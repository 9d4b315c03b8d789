"""``pgolf techniques``: every technique of the records as a switch -- where it comes from, what its record claimed,
and what pgolf measured on the golfbench proxy.

    pgolf techniques [--recipe NAME]
    pgolf techniques --recipe best --ablate     # per technique on in best: the --set overrides that turn it off

One row per technique: the config key(s) and the value(s) that turn it on, the default, the recipe's setting (with
``--recipe``), the record or PR it comes from, the gain that record claimed (on 8xH100, FineWeb) and pgolf's own
measured effect (BENCHMARKS.md; "-" until measured side by side on the proxy).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .config import Config, InputError


@dataclass(frozen=True)
class Technique:
    name: str
    keys: tuple[tuple[str, object], ...]  # (config key, the value that turns it on / the frontier's value)
    source: str
    claimed: str
    measured: str = "-"
    data: str = ""  # a technique of the data, not of the config (no keys): how a data set gets it


TECHNIQUES: tuple[Technique, ...] = (
    Technique("SmearGate v1 (per-dim gate)", (("model.smear_gate", True),), "03-19/03-20 seeds", "part of 1.1458",
              measured="proxy (H200), no SmearGate at all (v1 and v2 off): `best` final 1.21571 vs 1.21733 / "
                       "1.21934 with it (other leases; their spread 0.0020), 84.5 vs 86.3 / 87.2 ms; `best-sp8192` "
                       "1.21013 vs 1.21061: inside the spread, kept (BENCHMARKS, session 12)"),
    Technique("SmearGate v2 (gate from 12 dims, BOS-safe)", (("model.smear_gate", True), ("model.smear_window", 12)),
              "#1667 (04-16), BOS fix #1855", "part of 1.0714",
              measured="proxy (H200): `best` with v1's per-dim gate instead final 1.20210 vs 1.20247 (-0.0004, one "
                       "lease; pre-quant 1.22872 vs 1.22876): no gain measured over v1 (BENCHMARKS, session 17)"),
    Technique("BigramHash", (("model.bigram_buckets", 4096), ("model.bigram_dim", 128)), "03-19/03-20 seeds",
              "part of 1.1458",
              measured="proxy (H200): `best` without it final 1.20466 vs 1.20643 beside its row 0 (-0.0018, "
                       "session 17) and 1.20484 vs 1.20752 against another lease's (-0.0027, session 16), 237 KB "
                       "fewer: off in `best` since (BENCHMARKS)"),
    Technique("Shared value embedding (VE128)", (("model.ve_dim", 128), ("model.ve_layers", "9,10")),
              "03-22 #374 to 04-04 (03-31 on layers 9-10); removed 04-05",
              "part of 1.1228 onward (no figure of its own)",
              measured="proxy (H200): `best` with it on layers 9-10 roundtrip plain 1.23196 vs 1.23274 / 1.23144 "
                       "(two runs of `best`, other leases; pre-quant 1.2292 vs 1.2302 / 1.2288), +113 KB: inside the "
                       "spread, off (BENCHMARKS, session 18)"),
    Technique("Layer 0 without attention", (("model.no_attn_layers", "0"),), "03-31 #1204 (DISABLE_LAYER0_ATTN=1)",
              "part of 1.1063 (no figure of its own)"),
    Technique("OrthoInit", (("model.ortho_init", True),), "03-19 seed", "part of 1.1556"),
    Technique("XSA on every layer", (("model.xsa_last_n", "num_layers"),), "03-25 onward (last 3-4 before)",
              "~0.002 (last 3); all layers in every later record",
              measured="proxy (H200), one lease: `best` without XSA final 1.21214 vs 1.20847 (+0.0037; pre-quant plain "
                       "1.2362 vs 1.2336) at 85.7 vs 88.3 ms a step (2,649 vs 2,572 steps) (BENCHMARKS, session 15)"),
    Technique("Partial RoPE 16/64", (("model.rope_dims", 16),), "#287 (03-21)", "-0.0023 with LN scale",
              measured="in the -0.024 stack of 9 (BENCHMARKS, issue 12); proxy (H200): `best` with all 64 dims rotated "
                       "final 1.21348 vs 1.20371 (+0.0098, one lease; pre-quant 1.2363 vs 1.2302), 2% slower a step "
                       "(session 18); with 8 dims 1.20284 vs 1.20153 (+0.0013, one lease): 16 kept (session 19)"),
    Technique("LN scale 1/sqrt(layer+1)", (("model.ln_scale", True),), "#287 (03-21)", "with partial RoPE",
              measured="in the -0.024 stack of 9 (BENCHMARKS, issue 12); proxy (H200): `best` without it final "
                       "1.20635 vs 1.20247 (+0.0039, one lease; pre-quant 1.2326 vs 1.2288) (session 17)"),
    Technique("QK-gain init", (("model.qk_gain_init", 5.0),), "04-01 (4.0), 04-04 (5.0), #1953 (5.25)",
              "monotonic 4.0 -> 5.25",
              measured="in the -0.024 stack of 9 (BENCHMARKS, issue 12); proxy (H200): `best` at 1.5 final 1.20724 vs "
                       "1.20752 (-0.0003 against the other lease's row 0; pre-quant plain 1.2328 vs 1.2329): no "
                       "effect (session 16)"),
    Technique("Sparse attention-output gate", (("model.attn_gate_window", 12),), "#1667 (04-16), #1787 (04-23)",
              "no measurable bpb cost, ~44 KB",
              measured="proxy (H200): `best` without it final 1.20231 vs 1.20371 (-0.0014, one lease; pre-quant "
                       "1.2287 vs 1.2302), 1.2% faster a step (88.0 vs 89.1 ms): inside the spread (session 18); "
                       "without it and the parallel blocks 1.20482 vs 1.20153 (+0.0033, one lease), 2.1% faster: "
                       "kept (session 19)"),
    Technique("Document-masked attention (FlexAttention; the records' varlen)", (("model.doc_mask", True),),
              "#1530 (04-10, flash_attn_varlen_func over BOS-split segments) onward",
              "~2% faster training, ~0.001 nats",
              measured="+11.8% ms/step on `best-v1` (FlexAttention 51.0 vs cuDNN 45.6 ms, H200, side by side); "
                       "on `best` +8.7% (109.4 vs 100.7 ms, one lease); `best` pre-quant 1.2532 with it (session "
                       "9) vs 1.2486 / 1.2499 without (two runs, session 10): off in `best` (BENCHMARKS, 9-10)"),
    Technique("LeakyReLU(0.5)^2", (("model.activation", "leaky_relu2"),), "#493", "-0.003",
              measured="in the -0.024 stack of 9 (BENCHMARKS, issue 12); proxy (H200): `best` with relu^2 final "
                       "1.20574 vs 1.20752 (-0.0018 against the other lease's row 0, inside the spread 0.0019; "
                       "pre-quant plain 1.2316 vs 1.2329), 1.9% faster a step (88.0 vs 89.7 ms) (session 16)"),
    Technique("MLP 4x", (("model.mlp_mult", 4.0),), "04-01 onward (with WD 0.085)", "part of -0.017 (#1218)",
              measured="proxy (H200), one lease: `best` at MLP 2x final 1.22314 vs 1.20752 (+0.0156; pre-quant "
                       "plain 1.2481 vs 1.2329) though 15% faster a step (76.0 vs 89.7 ms, 2,987 vs 2,531 steps), "
                       "9.65 vs 14.73 MB (BENCHMARKS, session 16)"),
    Technique("Parallel attention/MLP (GPT-J lane)", (("model.parallel_from", 7),), "04-06",
              "pre-quant barely moved, quant gap tighter",
              measured="in the -0.024 stack of 9 (BENCHMARKS, issue 12); proxy (H200): `best` with no parallel block "
                       "(the sequential stack) final 1.20367 vs 1.20371 (0.0000, other lease; pre-quant 1.2300 vs "
                       "1.2302), 1.8% faster a step (87.5 vs 89.1 ms) (session 18); without them and the gate "
                       "1.20482 vs 1.20153 (+0.0033, one lease; 86.3 vs 88.1 ms): kept (session 19)"),
    Technique("Sigmoid-gated U-Net skips", (("model.skip_gates", True),), "04-01 (#1089) onward; 04-27 on",
              "part of 1.0634 onward (no figure of its own)",
              measured="proxy (H200), on two lanes: `best-sp8192` sliding 1.19526 vs 1.19770 (-0.0024), TTT 1.18676 "
                       "vs 1.18911 (session 13, one lease); `best` without them 1.20952 vs 1.21019 (-0.0007 for "
                       "additive skips, one lease, inside `best`'s spread of 0.0019; session 15)"),
    Technique("Two-lane parallel residuals (attention's and MLP's lanes, learned routing)",
              (("model.parallel_from", 8), ("model.parallel_lanes", 2)), "03-31 #1204 (from 7), 04-27 (from 8)",
              "~0.0022 (0.0037 nats)",
              measured="proxy (H200), one lease: `best` final 1.21038 vs 1.21240 with one lane (-0.0020; pre-quant "
                       "plain 1.2355 vs 1.2370) at 88.2 vs 85.7 ms a step (session 14). Across leases it looked 6x "
                       "larger: `best-sp8192` 1.19770 vs 1.21061 (sessions 13 / 12)"),
    Technique("Two lanes in the 03-31 form (the MLP reads the attention's write, mixed with x0; skips into both)",
              (("model.parallel_from", 7), ("model.parallel_lanes", 2), ("model.lane_form", "0331")), "03-31 #1204",
              "its lanes' ~0.0022 (no figure for the form against 04-27's)"),
    Technique("Depth recurrence", (("model.recur_from", 4), ("model.recur_to", 6), ("model.recur_loops", 2),
                                   ("schedule.recur_start_frac", 0.48)), "03-31 #1204; 3-5 x2 from 0.35 later",
              "~0.002-0.003",
              measured="off on the proxy (H200): `best` 2,603 steps at 87.2 ms, pre-quant 1.2438, final 1.21934 vs "
                       "2,250 at 100.9 ms, 1.2486 / 1.2499, 1.22323 / 1.22465 with it (other leases; spread 0.0014); "
                       "`best-sp8192` 1.21200 vs 1.21186 (same session): off in both (BENCHMARKS, session 11)"),
    Technique("Untied MLPs in the looped layers' extra passes (copies of the layer's MLP when the loop starts)",
              (("model.recur_from", 4), ("model.recur_to", 6), ("model.recur_loops", 2),
               ("schedule.recur_start_frac", 0.48), ("model.recur_untie_mlp", True)),
              "03-31 #1204 (REPEAT_UNTIE_MLP=full on layers 4-5)", "part of 1.1063 (no figure of its own)"),
    Technique("Muon Polar Express coefficients", (("optim.muon_ns", "polar_express"),), "#1344 (04-23)",
              "part of 1.0634",
              measured="proxy (H200), one lease: `best` with Newton-Schulz 5 instead final 1.20688 vs 1.20847 "
                       "(-0.0016 for NS5; pre-quant plain 1.2322 vs 1.2336), inside the spread of four runs of "
                       "`best` (0.0019), never a gain: `best` uses NS5 since (BENCHMARKS, session 15)"),
    Technique("MuonEq-R (row-normalised update)", (("optim.muon_row_norm", True),), "arXiv:2603.28254, #1285",
              "~0.001",
              measured="proxy (H200), one lease: `best` without it final 1.22881 vs 1.20847 (+0.0203; pre-quant "
                       "plain 1.2542 vs 1.2336) at the same step (BENCHMARKS, session 15)"),
    Technique("Muon momentum 0.97", (("optim.muon_momentum", 0.97),), "#1514 (04-09)", "~0.0005 vs 0.99",
              measured="proxy (H200): `best` at 0.95 final 1.20247 vs 1.20371 (-0.0012, other lease; pre-quant "
                       "1.2288 vs 1.2302): inside the spread (BENCHMARKS, session 18)"),
    Technique("Muon weight decay", (("optim.muon_wd", 0.095),), "seeds 0.04; frontier 0.085-0.095",
              "WD 0.04 swept optimal (03-20)",
              measured="proxy (H200): `best` without it final 1.22299 vs 1.20752 (+0.0155 against the other lease's "
                       "row 0; pre-quant plain 1.2456 vs 1.2329, roundtrip plain gap +0.0065 vs +0.0037), the same "
                       "bytes to 2 KB: SDClip's clip and grid follow each row's std (BENCHMARKS, session 16)"),
    Technique("AdamW beta2 0.99", (("optim.beta2", 0.99),), "9-hparam stack (#1855)", "part of 1.0611",
              measured="proxy (H200): `best` at 0.95 final 1.20385 vs 1.20371 (+0.0001, other lease; pre-quant "
                       "1.2303 vs 1.2302): no effect (BENCHMARKS, session 18)"),
    Technique("EMA of the weights", (("schedule.ema_decay", 0.997),), "03-20 XSA4 record; 0.9965 later",
              "-0.0006 vs SWA",
              measured="in the -0.024 stack of 9 (BENCHMARKS, issue 12); proxy (H200), one lease: `best` without it "
                       "final 1.21979 vs 1.20752 (+0.0123; pre-quant plain 1.2434 vs 1.2329) (session 16)"),
    Technique("SWA (budget fraction)", (("schedule.swa_every_frac", 0.008),), "03-20 seed family", "part of 1.1458"),
    Technique("Warm-down with a floor", (("schedule.warmdown_frac", 0.85), ("schedule.min_lr_scale", 0.1)),
              "04-05 onward (MIN_LR 0.1)", "part of 1.0634",
              measured="proxy (H200), one lease: `best` at its peak LR to the end (EMA kept) final 1.26613 vs 1.20752 "
                       "(+0.0586; pre-quant plain 1.2942 vs 1.2329) (BENCHMARKS, session 16)"),
    Technique("Training-context growth", (("schedule.seq_schedule", "0:1024,0.33:2048,0.67:3072"),),
              "#2014", "part of 1.05759",
              measured="proxy (H200), one lease: `best` at 1,024 tokens a window for the first third, then 2,048 "
                       "(`0:1024,0.33:2048`): final 1.19871 / 1.19908 (two runs) vs 1.20351 without (-0.0046; "
                       "pre-quant plain 1.2251 / 1.2253 vs 1.2297), 2,721 / 2,728 steps vs 2,619: `best` takes it "
                       "(session 19); to 3,072 (`train.seq_len=3072`, `0:1024,0.33:2048,0.67:3072`): 1.19342 vs "
                       "1.19609 in one lease (-0.0027), TTT 1.18651 vs 1.19020 (another lease), but that TTT is "
                       "predicted at 551 s of the 600 s eval budget on 8 H200s: not taken (session 20); again "
                       "1.19563 (2,610 steps), its TTT at a 2,048-token window (inside the budget, 418 s predicted) "
                       "1.19229: -0.0033 where TTT at 3,072 gave -0.0069, which leaves it level with `best`'s own "
                       "TTT (1.19020 in session 20): not taken (session 21); `best-sp8192` to 3,072 with TTT at "
                       "3,072 (sp8192's val set has 30% fewer tokens): sliding 1.19157 vs 1.19547 and TTT 1.18291 vs "
                       "1.18700 in one lease (-0.0041; another lease 1.19127 / 1.18300), TTT 393 s predicted on 8 "
                       "H200s: `best-sp8192` takes it (session 22)"),
    Technique("Delayed QAT (export's grid)", (("schedule.qat_start_frac", 0.85),), "03-22 (late QAT)",
              "never fired in the record (compile); pgolf's fires"),
    Technique("GPTQ-lite clip search", (("quant.clip_search", True),), "03-22", "-0.0006"),
    Technique("Full-Hessian GPTQ (train-data calibration)",
              (("quant.gptq", True), ("train.reserve_s", 7.0), ("train.reserve_gptq", 1.5)),
              "03-25 / 03-29 onward", "-0.0046 (03-25, AR self-generated calibration)",
              measured="proxy, best weights (sp1024): plain gap +0.0017 -> +0.0007 (row max), +0.0064 -> +0.0025 "
                       "(SDClip k 8); 9.3 s at sp1024, 13.6 s at sp8192 before the solve ran in stacks (its loop 8x "
                       "faster, H100) (BENCHMARKS, session 7); on `best`'s weights (the export only, H200): sliding "
                       "gap +0.00354 vs +0.00711 without, 8.2-10.1 s inside the clock (session 15); as a training "
                       "row, its 13 s reserve trained instead: final 1.20167 vs 1.20247 (-0.0008 without it, one "
                       "lease: 149 more steps, pre-quant -0.0037; plain gap +0.0055 vs +0.0027). Kept: on 8xH100 its "
                       "~7 s per rank are 1.2% of 600 s, not the proxy's 2.8% of 240 (session 17). Its reserve "
                       "timed in the warm-up (`train.reserve_gptq` 1.5, `best` since): GPTQ 5.9 s there and 5.9 s at "
                       "the export, reserve 8.8 s, 2,612 steps, final 1.20206 vs 1.20371 with 13 s fixed (session 18)"),
    Technique("GPTQ of the tied embedding (head inputs' Hessian; with quant.gptq)", (("quant.gptq_embed", True),),
              "04-05 (\"GPTQ-quantize the embedding matrix\")", "part of 1.0856",
              measured="proxy, best-sp8192 weights: int8 embedding gap +0.0049 -> +0.0042; int7 SDClip k14 "
                       "+0.099 -> +0.038 (BENCHMARKS, session 6); `best`'s weights (int8 row max): sliding gap "
                       "+0.00354 vs +0.00367 without, 67 bytes more (session 15)"),
    Technique("SDClip (clip = k std per row)", (("quant.sdclip", "attn:13,mlp:11.5,other:12.85"),),
              "04-05; per-class k 04-14, 9-hparam stack", "part of 1.0856; MLP 10->12 -0.00096",
              measured="proxy, with GPTQ: best-sp8192 -5.4 MB vs row max at the same gap (+0.0049 vs +0.0050); best "
                       "k 8 -3.35 MB for +0.0018, k 6 -2.26 MB for +0.0009; on the embedding (int7, k 14) +0.095 "
                       "alone (BENCHMARKS, sessions 6-7); on `best`'s weights without it the int6 matrices and int8 "
                       "embedding do not fit: the fit falls to int4 MLP and embedding, 15.52 MB, sliding gap +0.0141 "
                       "vs +0.0035 (session 15)"),
    Technique("Phased score-first TTT (global SGD on scored docs)",
              (("eval.ttt", True), ("eval.ttt_phases", 3), ("eval.ttt_prefix_frac", 0.05)),
              "#1610 (04-13), 3 phases #1626 (04-14)", "-0.00056 (1 phase); 3 phases -0.00081 more",
              measured="proxy, session 7's sp8192 artifact at seq 2048: LoRA TTT -0.0037 vs sliding s64, 3 "
                       "phases -0.0004 more; over 1,024-token windows +0.0030 (BENCHMARKS, session 7); rank 80, "
                       "48-token chunks at Adam lr 0.01 on `best-sp8192`: 1.6023, diverged (session 10)"),
    Technique("Document-independent LoRA TTT, the records' adapters (all projections, alpha 144, AdamW beta1 0)",
              (("eval.ttt", True), ("eval.ttt_rank", 80), ("eval.ttt_chunk", 48), ("eval.ttt_lr", 1e-4),
               ("eval.ttt_beta1", 0.0), ("eval.ttt_beta2", 0.99), ("eval.ttt_wd", 0.5),
               ("eval.ttt_targets", "q,k,v,o,mlp,head"), ("eval.ttt_alpha", 144.0)),
              "#1530 (04-10), alpha #1767 (04-23), rank 80 / beta2 0.99 / decay 0.5 the 04-27 stack",
              "~-0.008 nats vs sliding (#1530); -0.012 to -0.013 with phases (quantized plain -> TTT)",
              measured="proxy (H200), with 3 phases, on `best-sp8192`'s artifact: compiled -0.0095 vs sliding s64 "
                       "twice (1.20113 vs 1.21061 in 138.9 s, 273 s predicted on 8 GPUs; 1.20064 vs 1.21013 in 148.2 "
                       "s; warm-up 278 / 336 s outside the timer) (session 12); eager -0.0094 (1.20262 vs 1.21200, "
                       "344 s, 659 s predicted) and -0.0083 with recurrence (session 11); at sp1024 on `best`'s "
                       "artifact -0.0065 (1.19992 vs 1.20643 in 208 s, 415 s predicted on 8 GPUs; warm-up 100 s) "
                       "(session 17), -0.0074 on `best` of session 18 (1.19633 vs 1.20371 in 201 s, 398 s predicted; "
                       "warm-up 88 s) (session 18)"),
    Technique("TTT adapters' A kept across documents (B reset only)", (("eval.ttt", True), ("eval.ttt_warm_a", True)),
              "#1767 (04-23), the records' default since", "part of -0.00043 with alpha 144 and decay 1.0",
              measured="proxy (H200), `best-sp8192` with two lanes and gated skips: TTT 1.18676 vs 1.18703 with A "
                       "reset (-0.0003, session 13, one artifact)"),
    Technique("Short-document TTT chunks (a document under 2,048 tokens scored and trained 16 at a time)",
              (("eval.ttt_short_chunk", 16), ("eval.ttt_short_len", 2048)),  # with eval.ttt (not a key here:
              # TTT on would make this technique on too, in the ablation's reading)
              "#2014 (04-30), #2067 (05-01)", "part of 1.05759 (#2014, with context growth)",
              measured="proxy (H200), TTT at 2,048 on one `ctx3` artifact: 1.19209 vs 1.19229 (-0.0002) in 357.1 s "
                       "vs 209.1 s (698 s predicted on 8 GPUs, over the eval budget): off (session 22)"),
    Technique("Asymmetric logit rescale (the softcap's positive and negative caps learned by phased TTT's SGD)",
              (("eval.ttt", True), ("eval.ttt_phases", 3), ("eval.ttt_asym_softcap", True)),
              "#1923 (04-29), in #1945, #1953 and #2135", "-0.0013 (TTT's recovery, #1945 over #1908, 3 seeds)",
              measured="proxy (H200), TTT at 2,048 on one `ctx3` artifact: 1.19229344 vs 1.19228986 without "
                       "(+0.000004); the caps stayed at 30.000: the proxy's three phases run ~6 SGD steps at lr "
                       "0.001 (~95 over the challenge's 62M-token val set), too few to move them (session 21)"),
    Technique("CaseOps (case as operator tokens; bytes from a sidecar of the original text)", (),
              "#1729 (04-18); the top three records' data (romeerp/parameter-golf-caseops-v1)",
              "0.005-0.006 nats a token; 1.07193 -> 1.06780 with a WD taper",
              measured="proxy (H200), one lease, `best-sp8192` on golfbench with sp8192 tokenizers trained on its "
                       "train text: CaseOps final 1.17469 vs 1.18918 plain (-0.0145; 6.4% more tokens, each 7.2% "
                       "cheaper); TTT 1.16624 in 207.6 s (409 s predicted on 8 GPUs). Half of golfbench's val "
                       "bytes are Wikipedia's: the FineWeb half's share not measured yet (BENCHMARKS, session 23)",
              data="data: `pgolf data tokenizer --caseops`, then `pgolf data build --caseops`"),
    Technique("LQER (rank-4 error correction, int2/int4 factors)", (("quant.lqer_top", 3), ("quant.lqer_rank", 4)),
              "#1797 (04-27)", "part of 1.0611 (#1855)",
              measured="proxy: top 4 -0.0002 (best, +9.7 KB) / -0.0004 (best-sp8192, +12 KB) (BENCHMARKS, "
                       "sessions 6-7); top 3 on `best`'s weights (H200): sliding gap +0.003544 vs +0.003549 "
                       "without, +7.5 KB (session 15)"),
    Technique("AWQ-lite (64 salient columns at int8)", (("quant.awq", True), ("quant.awq_group", 64)), "#1945",
              "part of 1.05943", measured="CPU model only: +9% bytes at width 256 (BENCHMARKS, issue 13 session 4)"),
    Technique("Rows in L1 nearest-neighbour order", (("quant.sort_rows", True),), "per-group compression (04-27)",
              "~280 KB with per-group lrzip",
              measured="CPU model: +0.46% bytes net (BENCHMARKS, issue 13 session 4); `best`'s weights (brotli-11): "
                       "+62,054 bytes net for bit-identical weights (the uint16 order outweighs what sorting saves): "
                       "off in `best` since (session 15)"),
)


def _get(cfg: Config, key: str):
    """A config value as ``--set`` takes it (a tuple comma-joined)."""
    sec, name = key.split(".")
    v = getattr(getattr(cfg, sec), name)
    return ",".join(map(str, v)) if isinstance(v, tuple) else v


def rows(recipe: Config | None = None) -> list[dict]:
    """One row per technique; a technique of the data (``Technique.data``) has its way in as its switch, and no
    default or recipe value: it is on when the data is built with it, whatever the recipe."""
    default = Config()
    out = []
    for t in TECHNIQUES:
        row = {"technique": t.name, "switch": t.data or ", ".join(f"{k}={v}" for k, v in t.keys),
               "default": "-" if t.data else ", ".join(f"{_get(default, k)}" for k, _ in t.keys),
               "source": t.source, "claimed": t.claimed, "measured": t.measured}
        if recipe is not None:
            row["recipe"] = "(the data's)" if t.data else ", ".join(f"{_get(recipe, k)}" for k, _ in t.keys)
        out.append(row)
    return out


def ablations(recipe: Config) -> list[tuple[str, list[str]]]:
    """Issue 12's ablation from ``recipe``: per technique it has on (one of its own keys away from the default, not
    only the keys of a technique it extends: SmearGate v2 is on with ``smear_window``), the ``--set``
    overrides that turn it off -- its keys back to their defaults, except the keys of another technique it has on
    that this one extends and an on/off switch shared with one (SmearGate v2 off leaves v1 on; phased TTT off leaves
    LoRA TTT on), unless that leaves nothing to set; turning off a technique another one extends turns that one off
    too (SmearGate v1 off: no gate at all; the GPT-J lane off: no parallel block, so one lane). A technique whose
    on/off switch the recipe has off is not on, whatever its other keys (TTT's settings in a recipe that scores
    without TTT). A key whose default cannot hold in the recipe keeps the recipe's value, and the row's name says so;
    a technique with no other key to reset has no row (``smoke``'s 64-token TTT chunk is not the records' adapters:
    the default 256 does not fit its 128-token TTT window). Every row validates (``apply_overrides``)."""
    from .config import ConfigError, apply_overrides

    def fits(sets: list[str]) -> bool:
        try:
            apply_overrides(recipe, sets)
        except ConfigError:
            return False
        return True

    default = Config()
    differs = {k for t in TECHNIQUES for k, _ in t.keys if _get(recipe, k) != _get(default, k)}

    keys = {t.name: frozenset(k for k, _ in t.keys) for t in TECHNIQUES}
    # a technique's own keys: less those of a technique it extends (two lanes: parallel_lanes)
    own = {n: ks - set().union(*(o for o in keys.values() if o < ks)) for n, ks in keys.items()}
    on = [t for t in TECHNIQUES if own[t.name] & differs  # a switch the recipe has off (e.g. eval.ttt) makes the
          and all(_get(recipe, k) is True for k, v in t.keys if v is True)]  # rest inert
    out = []
    for t in on:
        mine = keys[t.name]
        others = [keys[u.name] for u in on if u is not t]
        shared_switch = {k for k, v in t.keys if v is True and any(k in o for o in others)}  # e.g. eval.ttt
        inner = set().union(*(o for o in others if o < mine)) | shared_switch
        changed = [k for k, _ in t.keys if k in differs]  # never empty: t is on
        reset = [k for k in changed if k not in inner] or changed  # SmearGate v1: its switch alone ...
        # ... and the own keys of a technique that extends this one go too (no two lanes without parallel blocks)
        reset += sorted(k for u in on if mine < keys[u.name] for k in own[u.name] & differs)
        sets = [f"{k}={_get(default, k)}" for k in reset]
        kept = []
        if not fits(sets):  # a key whose default cannot hold beside the others (one at most) keeps the recipe's value
            kept = [k for k, kv in zip(reset, sets) if fits([x for x in sets if x != kv])][:1]
            sets = [kv for k, kv in zip(reset, sets) if k not in kept]
            if not sets:  # on only by a value the recipe needs for itself: nothing to turn off
                continue
            apply_overrides(recipe, sets)  # a row that cannot run is a bug here, not at the device
        note = "; ".join(f"{k} kept at {_get(recipe, k)}" for k in kept)
        out.append((f"{t.name} ({note}: the default does not fit this recipe)" if kept else t.name, sets))
    return out


def cmd_techniques(args) -> int:
    from .recipes import get_recipe

    recipe = get_recipe(args.recipe) if args.recipe else None
    if args.ablate:
        if recipe is None:
            raise InputError("pgolf techniques --ablate needs --recipe NAME")
        for name, sets in ablations(recipe):
            print(f"{name}: " + " ".join(f"--set {x}" for x in sets))
        return 0
    cols = ["technique", "switch", "default"] + (["recipe"] if recipe else []) + ["source", "claimed", "measured"]
    table = rows(recipe)
    if recipe is not None:
        cols[cols.index("recipe")] = "recipe"
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in table:
        print(" | ".join(str(r[c]) for c in cols))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("techniques", help="every technique switch: source, claimed gain, pgolf's measured effect",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="also show each technique's setting in this recipe")
    p.add_argument("--ablate", action="store_true",
                   help="instead, per technique the recipe has on, the --set overrides that turn it off (one proxy "
                        "run each: issue 12's ablation table)")
    p.set_defaults(fn=cmd_techniques)
