#!/usr/bin/env bash
# Validation during training and using the trained model, as a user meets
# them: periodic validation on held-out shards with the best checkpoint kept
# (and still known after a resume), the model exported (safetensors checked
# by an independent reader), a new run started from its weights, and
# vlm-embed and vlm-caption over a folder of images and texts, whose
# zero-shot accuracy must agree with the trainer's validation.
# vlm-attn writes one heat map per caption token. vlm-heads scores the heads
# and writes a smaller model that the other tools read.
# usage: model_use_test.sh VLM_DATA VLM_TRAIN VLM_CKPT VLM_EMBED VLM_CAPTION VLM_ATTN VLM_HEADS CONFIG
set -uo pipefail
data=$1 train=$2 ckpt=$3 embed=$4 caption=$5 attn=$6 heads=$7 config=$8
source "$(dirname "$0")/script_lib.sh"
export OMPI_MCA_rmaps_base_oversubscribe=1
mpi=(mpirun --oversubscribe -np 2)
python=$(command -v python3) || fail "python3 is needed to read the outputs independently (scripts/install-deps.sh)"

echo "== periodic validation on held-out shards; the best checkpoint is kept besides latest"
# 300 held-out single items; each sample's <key>.json names its class, for zero-shot accuracy.
"$data" convert fashion-mnist --out "$root/val" --split test --task single --samples 300 --shard-samples 100 \
  > "$root/convert.log" 2>&1 || fail "convert the test split: $(tail -3 "$root/convert.log")"
val=(--set "eval.shards=$root/val/test-{00000..00002}.tar" --set eval.samples=300 --set eval.every_steps=10
     --set eval.best_metric=ZERO_SHOT_ACCURACY --set eval.caption_samples=0 --set eval.enabled=true)
run=(--set data.task=SINGLE --set loop.log_every=10 --set checkpoint.dir="$root/ck" --set checkpoint.keep=1)
"${mpi[@]}" "$train" --config "$config" "${run[@]}" "${val[@]}" --set loop.steps=40 > "$root/train.log" 2>&1 ||
  fail "training with validation: $(tail -3 "$root/train.log")"
zero_shot_at() { sed -nE "s/^.*validation at step $2: .*zero-shot accuracy ([0-9.]+) \(300 samples, 10 classes\).*/\1/p" "$1"; }
best_step=0 best=-1
for s in 10 20 30 40; do
  a=$(zero_shot_at "$root/train.log" $s)
  [[ -n $a ]] || fail "no validation with zero-shot accuracy at step $s: $(grep validation "$root/train.log" | head -3)"
  if awk -v a="$a" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$a best_step=$s; fi
done
grep -qE "validation at step 10: contrastive loss [0-9.]+, R@1 image->text [0-9.]+ text->image [0-9.]+ \(300 held-out" \
  "$root/train.log" || fail "validation line: $(grep -m1 validation "$root/train.log")"
best_dir=$(printf 'step-%08d' $best_step)
[[ $(cut -d' ' -f1 "$root/ck/best") == "$best_dir" ]] || fail "best names $(cat "$root/ck/best"), the best validation was $best_dir"
"$ckpt" inspect "$root/ck/best" > "$root/inspect.log" || fail "inspect best"
grep -q "validation: 300 samples, .*zero-shot accuracy $best .*best by ZERO_SHOT_ACCURACY" "$root/inspect.log" ||
  fail "inspect of best: $(grep validation "$root/inspect.log")"
echo "zero-shot accuracy at steps 10..40: $(for s in 10 20 30 40; do printf '%s ' "$(zero_shot_at "$root/train.log" $s)"; done)-> best $best_dir"
# Resumed with a learning rate that wrecks the model (0.2, 100x): best must still name the
# step before (the resumed run knows the best so far), and keep=1 must not delete it.
"${mpi[@]}" "$train" --config "$config" "${run[@]}" "${val[@]}" --set loop.steps=50 --set optim.lr=0.2 \
  --set optim.warmup_steps=0 --resume latest > "$root/wreck.log" 2>&1 || fail "resume: $(tail -3 "$root/wreck.log")"
wrecked=$(zero_shot_at "$root/wreck.log" 50)
awk -v a="$wrecked" -v b="$best" 'BEGIN { exit !(a < b) }' || fail "lr=0.2 did not make step 50 worse ($wrecked >= $best)"
[[ $(cut -d' ' -f1 "$root/ck/best") == "$best_dir" && -f $root/ck/$best_dir/manifest.pb ]] ||
  fail "after the resume, best is $(cat "$root/ck/best"), $best_dir exists: $([[ -d $root/ck/$best_dir ]] && echo yes || echo no)"
[[ $(cut -d' ' -f1 "$root/ck/latest") == step-00000050 ]] || fail "latest is $(cat "$root/ck/latest")"
echo "after a resume at lr=0.2: zero-shot $wrecked at step 50; best still $best_dir; checkpoints: $(ls "$root/ck" | grep step- | tr '\n' ' ')"
pass "validation and the best checkpoint"

echo "== export: .vlm and safetensors (read by an independent reader)"
"$ckpt" export "$root/ck/best" "$root/model.vlm" > /dev/null || fail "export .vlm"
"$ckpt" export "$root/ck/best" "$root/model.safetensors" > /dev/null || fail "export safetensors"
# The safetensors specification, read with Python's standard library only.
"$python" - "$root/model.safetensors" "$root/inspect.log" <<'EOF' || fail "safetensors check failed"
import json, struct, sys, re
data = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", data[:8])
assert n % 8 == 0, "header not padded to 8 bytes"
header = json.loads(data[8:8 + n])
meta = header.pop("__metadata__")
assert meta["format"] == "pt" and "model {" in meta["vlmtrain.config"], meta.keys()
body = len(data) - 8 - n
spans = sorted(tuple(t["data_offsets"]) for t in header.values())
assert spans[0][0] == 0 and spans[-1][1] == body, "tensors do not cover the data"
assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "gaps or overlaps between tensors"
count = 0
for name, t in header.items():
    assert t["dtype"] == "F32", name
    elements = 1
    for d in t["shape"]:
        elements *= d
    assert t["data_offsets"][1] - t["data_offsets"][0] == 4 * elements, name
    count += elements
aliases = json.loads(meta["vlmtrain.aliases"])
assert all(name in header for name in aliases), "an alias of a tensor not in the file"
# The parameter count vlm-ckpt inspect states for the checkpoint.
stated = int(re.search(r"(\d+) parameters", open(sys.argv[2]).read()).group(1))
assert count == stated, (count, stated)
start = 8 + n + header["logit_scale"]["data_offsets"][0]
(scale,) = struct.unpack("<f", data[start:start + 4])
print(f"safetensors: {len(header)} tensors, {count} parameters, {len(aliases)} shared; logit_scale {scale:.6f}")
EOF
pass "export"

echo "== --init-from: a new run from the exported weights"
# With lr 0 the weights stay as they were: its validation must equal the best one's.
init=(--set checkpoint.dir="$root/ft" --set optim.lr=0 --set loop.steps=1 --set eval.every_steps=0)
"${mpi[@]}" "$train" --config "$config" "${run[@]}" "${val[@]}" "${init[@]}" --init-from "$root/model.vlm" \
  > "$root/init.log" 2>&1 || fail "--init-from: $(tail -3 "$root/init.log")"
grep -q "a new run from the weights of $root/model.vlm" "$root/init.log" || fail "no line saying where the weights came from"
[[ $(zero_shot_at "$root/init.log" 1) == "$best" ]] || fail "validation after --init-from: $(zero_shot_at "$root/init.log" 1), the best: $best"
[[ $(cut -d' ' -f1 "$root/ft/latest") == step-00000001 ]] || fail "the new run's first checkpoint is not step 1"
"$train" --config "$config" "${run[@]}" "${init[@]}" --set checkpoint.dir="$root/ft2" --set model.d_model=48 \
  --init-from "$root/ck/best" > "$root/init_bad.log" 2>&1 && fail "--init-from accepted another model config"
grep -q "the model config differs from the checkpoint's (model.)" "$root/init_bad.log" ||
  fail "no clear error for another model: $(tail -2 "$root/init_bad.log")"
# Weights inside the checkpoint.dir that checkpoint.overwrite would empty: refused, and nothing is lost.
"$train" --config "$config" "${run[@]}" "${init[@]}" --set checkpoint.dir="$root/ck" --set checkpoint.overwrite=true \
  --init-from "$root/ck/best" > "$root/init_self.log" 2>&1 && fail "--init-from inside an overwritten checkpoint.dir"
grep -q "is inside checkpoint.dir $root/ck, which checkpoint.overwrite=true empties before training" "$root/init_self.log" &&
  [[ -f $root/ck/$best_dir/manifest.pb ]] || fail "init from an overwritten folder: $(tail -2 "$root/init_self.log")"
# A model file holds weights only: --resume from one is refused, with --init-from suggested.
"$train" --config "$config" "${run[@]}" "${init[@]}" --set checkpoint.dir="$root/ft3" --resume "$root/model.vlm" \
  > "$root/resume_model.log" 2>&1
[[ $? == 2 ]] && grep -q "HINT: start a new run from its weights with --init-from $root/model.vlm" "$root/resume_model.log" ||
  fail "--resume from a model file: $(tail -2 "$root/resume_model.log")"
pass "--init-from"

echo "== vlm-embed and vlm-caption over a folder of images and texts"
mkdir -p "$root/imgs" "$root/truth"
for t in "$root"/val/test-0000{0..2}.tar; do tar -xf "$t" -C "$root/truth" || fail "GNU tar cannot read $t"; done
cp "$root"/truth/*.png "$root/imgs/"
# One prompt per class, as validation builds them (eval.zero_shot_prompt "a photo of {a} {}").
"$python" - "$root/truth" "$root/imgs" <<'EOF' || fail "could not write the prompts"
import glob, json, os, sys
classes = sorted({json.load(open(f))["class"] for f in glob.glob(os.path.join(sys.argv[1], "*.json"))})
for i, c in enumerate(classes):
    open(os.path.join(sys.argv[2], f"prompt_{i}.txt"), "w").write(f"a photo of {'an' if c[0] in 'aeiou' else 'a'} {c}\n")
EOF
"$embed" --model "$root/model.vlm" --out "$root/emb.jsonl" "$root/imgs" > "$root/embed.log" 2>&1 ||
  fail "vlm-embed: $(tail -3 "$root/embed.log")"
grep -q "vlm-embed: 300 images and 10 texts embedded (32 dimensions)" "$root/embed.log" || fail "vlm-embed: $(tail -2 "$root/embed.log")"
accuracy=$("$python" - "$root/emb.jsonl" "$root/truth" <<'EOF'
import json, os, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows:
    assert abs(sum(x * x for x in r["embedding"]) - 1) < 1e-4, "not a unit vector: " + r["file"]
texts = [r for r in rows if r["kind"] == "text"]
classes = sorted(json.load(open(os.path.join(sys.argv[2], f)))["class"] for f in os.listdir(sys.argv[2]) if f.endswith(".json"))
names = sorted(set(classes))
hits = total = 0
for r in rows:
    if r["kind"] != "image":
        continue
    key = os.path.basename(r["file"])[:-4]
    truth = json.load(open(os.path.join(sys.argv[2], key + ".json")))["class"]
    scores = [sum(a * b for a, b in zip(r["embedding"], t["embedding"])) for t in texts]
    best = max(range(len(texts)), key=lambda i: scores[i])
    predicted = names[int(os.path.basename(texts[best]["file"])[7:-4])]
    hits += predicted == truth
    total += 1
print(f"{hits / total:.4f}")
EOF
) || fail "could not score the embeddings"
# Another batching than validation's: allow two of 300 argmaxes to flip.
awk -v a="$accuracy" -v b="$best" 'BEGIN { d = a - b; exit !(d <= 2.0 / 300 + 1e-9 && -d <= 2.0 / 300 + 1e-9) }' ||
  fail "zero-shot accuracy from vlm-embed $accuracy, from validation $best"
echo "zero-shot accuracy of the best checkpoint: validation $best, vlm-embed + Python $accuracy"
"$caption" --model "$root/ck/best" --out "$root/captions.tsv" "$root/imgs" > "$root/caption.log" 2>&1 ||
  fail "vlm-caption: $(tail -3 "$root/caption.log")"
[[ $(wc -l < "$root/captions.tsv") == 300 ]] || fail "vlm-caption wrote $(wc -l < "$root/captions.tsv") lines for 300 images"
matches=0
while IFS=$'\t' read -r file text; do
  [[ -n $text ]] || fail "an empty caption for $file"
  [[ $text == "$(cat "$root/truth/$(basename "${file%.png}").txt")" ]] && matches=$((matches + 1))
done < "$root/captions.tsv"
echo "vlm-caption (best): 300 captions, $matches exactly the reference; e.g. $(head -1 "$root/captions.tsv" | cut -f2)"
"$embed" --model "$root/model.vlm" "$root/nowhere" > "$root/bad.log" 2>&1
[[ $? == 1 ]] && grep -q "vlm-embed: error: $root/nowhere: not a folder" "$root/bad.log" || fail "missing folder: $(cat "$root/bad.log")"
"$caption" "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 2 ]] && grep -q "\-\-model is required" "$root/bad.log" || fail "missing --model: $(cat "$root/bad.log")"
# An output inside the checkpoint it reads is refused, and the checkpoint stays whole.
"$caption" --model "$root/ck/best" --out "$root/ck/latest" "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 1 ]] && grep -q "\-\-out $root/ck/latest is inside $root/ck, which holds the model" "$root/bad.log" ||
  fail "--out inside the checkpoint: $(cat "$root/bad.log")"
"$embed" --model "$root/model.vlm" --out "$root/model.vlm" "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 1 ]] && grep -q "is inside $root/model.vlm" "$root/bad.log" || fail "--out over the model: $(cat "$root/bad.log")"
"$caption" --model "$root/ck/best" --out "$root/c2.tsv" "$root/imgs" > /dev/null 2>&1 || fail "the checkpoint was damaged"
"$embed" --model "$root/model.vlm" --out "$root/imgs" "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 1 ]] && grep -q "$root/imgs is a folder; --out names a file" "$root/bad.log" && [[ ! -e $root/imgs.tmp ]] ||
  fail "--out a folder: $(cat "$root/bad.log")"
first_image=$(ls "$root/imgs" | grep -m1 '\.png$')
sum=$(md5sum < "$root/imgs/$first_image")
"$caption" --model "$root/model.vlm" --out "$root/imgs/$first_image" "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 1 ]] && grep -q "is one of the files read" "$root/bad.log" && [[ $(md5sum < "$root/imgs/$first_image") == "$sum" ]] ||
  fail "--out one of the images: $(cat "$root/bad.log")"
pass "vlm-embed and vlm-caption"

echo "== vlm-caption sampling: a caption depends on its image and the seed, not the batch"
sample=(--model "$root/ck/best" --temperature 1 --top-p 0.9 --adaptive-temperature --seed 5)
"$caption" "${sample[@]}" --batch 64 --out "$root/sampled64.tsv" "$root/imgs" > "$root/sampled.log" 2>&1 ||
  fail "vlm-caption sampling: $(tail -3 "$root/sampled.log")"
"$caption" "${sample[@]}" --batch 7 --out "$root/sampled7.tsv" "$root/imgs" > "$root/sampled.log" 2>&1 ||
  fail "vlm-caption sampling, --batch 7: $(tail -3 "$root/sampled.log")"
cmp -s "$root/sampled64.tsv" "$root/sampled7.tsv" || fail "sampled captions changed with --batch"
"$caption" --model "$root/ck/best" --temperature 1 --seed 6 --out "$root/sampled6.tsv" "$root/imgs" > "$root/sampled.log" 2>&1 ||
  fail "vlm-caption --seed 6: $(tail -3 "$root/sampled.log")"
cmp -s "$root/sampled6.tsv" "$root/captions.tsv" && fail "sampling at temperature 1 gave the greedy captions for all 300 images"
"$caption" --model "$root/ck/best" --top-k 5 "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 2 ]] && grep -q "give a --temperature above 0" "$root/bad.log" || fail "--top-k without --temperature: $(cat "$root/bad.log")"
"$caption" --model "$root/ck/best" --temperature hot "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 2 ]] && grep -q "\-\-temperature must be a number" "$root/bad.log" || fail "--temperature hot: $(cat "$root/bad.log")"
"$embed" --model "$root/ck/best" --temperature 1 "$root/imgs" > "$root/bad.log" 2>&1
[[ $? == 2 ]] && grep -q "unknown option '--temperature'" "$root/bad.log" || fail "vlm-embed took --temperature: $(cat "$root/bad.log")"
pass "vlm-caption sampling"

echo "== vlm-attn: a heat map of cross-attention per caption token"
mkdir -p "$root/attn_imgs"
cp $(ls "$root"/imgs/*.png | head -3) "$root/attn_imgs/"
# One image twice, under two extensions with one stem: each keeps its own maps.
first=$(ls "$root"/attn_imgs/*.png | head -1)
cp "$first" "${first%.png}.jpeg"
"$attn" --model "$root/ck/best" --out "$root/attn" "$root/attn_imgs" > "$root/attn.log" 2> "$root/attn.err" ||
  fail "vlm-attn: $(tail -3 "$root/attn.err")"
[[ $(wc -l < "$root/attn.log") == 4 ]] || fail "vlm-attn printed $(wc -l < "$root/attn.log") captions for 4 images"
# Every file the index names is a 224 x 224 RGB PNG (the SINGLE task's 28 x 28 image enlarged 8 times) that is not one colour.
"$python" - "$root/attn" <<'EOF' || fail "vlm-attn's PNG files"
import os, struct, sys, zlib
rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(sys.argv[1], "index.tsv"))]
assert rows and all(len(r) == 4 for r in rows), rows[:3]
assert len({r[0] for r in rows}) == 4, "not 4 images in the index"
assert len({r[3] for r in rows}) == len(rows), "two index rows name one file"
for image, position, token, name in rows:
    data = open(os.path.join(sys.argv[1], name), "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", name + ": not a PNG"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (224, 224, 8, 2), f"{name}: {width}x{height}, depth {depth}, colour type {colour}"
    chunks, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            chunks += data[at + 8:at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(chunks)
    assert len(raw) == height * (1 + 3 * width), name + ": wrong amount of pixel data"
    assert len(set(raw)) > 8, name + ": one colour"
print(f"{len(rows)} heat maps checked")
EOF
"$attn" --model "$root/ck/best" "$root/attn_imgs" > "$root/bad.log" 2>&1
[[ $? == 1 ]] && grep -q "\-\-out DIR is required" "$root/bad.log" || fail "vlm-attn without --out: $(cat "$root/bad.log")"
echo "vlm-attn: $(head -1 "$root/attn.log"); $(wc -l < "$root/attn/index.tsv") heat maps"
pass "vlm-attn"

echo "== vlm-heads: head scores, and a model with the lowest-scoring heads removed"
"$heads" --model "$root/ck/best" --batches 2 --batch 32 --scores "$root/scores.tsv" --remove 2 --out "$root/pruned.vlm" \
  > "$root/heads.log" 2>&1 || fail "vlm-heads: $(tail -3 "$root/heads.log")"
# tiny_test: 4 weight sets (vision 1, text 2, cross-attention 1) of 2 heads: 8 scores, at most 4 heads can go.
[[ $(wc -l < "$root/scores.tsv") == 8 ]] || fail "scores.tsv has $(wc -l < "$root/scores.tsv") rows, not 8"
awk -F'\t' '$3 < 0 || $3 != $3 + 0 { exit 1 }' "$root/scores.tsv" || fail "a score is not a non-negative number: $(cat "$root/scores.tsv")"
grep -q "removed 2 heads: $root/pruned.vlm" "$root/heads.log" || fail "vlm-heads --remove: $(tail -2 "$root/heads.log")"
"$ckpt" verify "$root/pruned.vlm" > /dev/null || fail "the pruned model does not verify"
read -r after before <<< "$(sed -nE 's/^removed 2 heads: .* \(([0-9]+) parameters, ([0-9]+) before\)$/\1 \2/p' "$root/heads.log")"
[[ -n $after && $after -lt $before ]] || fail "the pruned model is not smaller: $(tail -1 "$root/heads.log")"
"$caption" --model "$root/pruned.vlm" --out "$root/pruned_captions.tsv" "$root/attn_imgs" > /dev/null 2>&1 ||
  fail "vlm-caption cannot read the pruned model"
[[ $(wc -l < "$root/pruned_captions.tsv") == 4 ]] || fail "vlm-caption on the pruned model: $(cat "$root/pruned_captions.tsv")"
"$heads" --model "$root/ck/best" --batches 1 --batch 8 --remove 5 --out "$root/too_many.vlm" > "$root/bad.log" 2>&1
[[ $? == 2 && ! -e $root/too_many.vlm ]] && grep -q "at most 4 can go" "$root/bad.log" ||
  fail "vlm-heads --remove 5 of 8 heads in 4 sets: $(cat "$root/bad.log")"
"$heads" --model "$root/ck/best" --remove 2x --out "$root/bad.vlm" > "$root/bad.log" 2>&1
[[ $? == 2 ]] && grep -q "takes a whole number, not '2x'" "$root/bad.log" || fail "vlm-heads --remove 2x: $(cat "$root/bad.log")"
echo "vlm-heads: $(tail -1 "$root/heads.log")"
pass "vlm-heads"

echo "model use tests: $passed passed, 0 failed"
