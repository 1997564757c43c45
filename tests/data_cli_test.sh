#!/usr/bin/env bash
# vlm-data and training on WebDataset shards, as a user meets them: Fashion-
# MNIST converted and trained on (the same result as from the IDX files), a
# folder of the user's images and a COCO-style captions file converted,
# inspected and trained on in RGB, damaged shards, and exact resume.
# usage: data_cli_test.sh VLM_DATA VLM_TRAIN MAKE_TEST_IMAGES CONFIG
set -uo pipefail
data=$1 train=$2 make_images=$3 config=$4
source "$(dirname "$0")/script_lib.sh"
export OMPI_MCA_rmaps_base_oversubscribe=1
mpi=(mpirun --oversubscribe)

echo "== Fashion-MNIST to shards: training on them is training on the IDX files"
# tiny_test.pbtxt: 4096 samples, seed 1; the MIXED task has single items for zero-shot accuracy.
"$data" convert fashion-mnist --out "$root/fm" --task mixed --samples 4096 --seed 1 --shard-samples 1000 \
  > "$root/convert.log" 2>&1 || fail "convert fashion-mnist: $(tail -3 "$root/convert.log")"
grep -q "shards: $root/fm/train-{00000..00004}.tar" "$root/convert.log" || fail "convert did not name 5 shards"
grep -q "wrote train-00004.tar: 4096 of 4096 samples" "$root/convert.log" || fail "no progress lines"
"$data" inspect "$root/fm/train-{00000..00004}.tar" > "$root/inspect.log" || fail "inspect of intact shards exits non-zero"
# Nothing written over what is there or read: refused with exit status 2, the shards untouched.
sum=$(cat "$root"/fm/*.tar | md5sum)
"$data" convert fashion-mnist --out "$root/fm" --samples 50 > "$root/again.log" 2>&1
[[ $? == 2 ]] && grep -q "already holds shards named train-NNNNN.tar" "$root/again.log" || fail "convert into used shards: $(cat "$root/again.log")"
"$data" train-tokenizer --out "$root/fm/train-00001.tar" "$root/fm/train-{00000..00004}.tar" > "$root/again.log" 2>&1
[[ $? == 2 ]] && grep -q "is one of the shards it reads" "$root/again.log" || fail "tokenizer over a shard: $(cat "$root/again.log")"
[[ $(cat "$root"/fm/*.tar | md5sum) == "$sum" ]] || fail "the shards changed"
"$data" inspect --show many "$root/fm/train-00000.tar" > "$root/again.log" 2>&1
[[ $? == 2 ]] && grep -q "\-\-show needs an integer, not 'many'" "$root/again.log" || fail "inspect --show many: $(cat "$root/again.log")"
grep -q "^samples: 4096" "$root/inspect.log" && grep -q "^damaged: 0" "$root/inspect.log" &&
  grep -q "56x28 4096" "$root/inspect.log" || fail "inspect: $(cat "$root/inspect.log")"
for n in -5 99999999999; do
  "$data" convert fashion-mnist --out "$root/bad" --samples $n > "$root/bad.log" 2>&1 && fail "--samples $n was taken"
  grep -q "\-\-samples $n is out of range; allowed \[0, 100000000\]" "$root/bad.log" || fail "--samples $n: $(cat "$root/bad.log")"
done
"$data" train-tokenizer --out "$root/huge.model" --vocab 2147483647 "$root/fm/train-00000.tar" > "$root/bad.log" 2>&1
[[ $? == 2 ]] && grep -q "\-\-vocab 2147483647 is out of range; allowed \[8, 1048576\]" "$root/bad.log" ||
  fail "--vocab 2147483647 (SentencePiece ran for ever): $(cat "$root/bad.log")"
task=(--set data.task=MIXED)
shards=(--set "data.train_shards=$root/fm/train-{00000..00004}.tar" --set data.image_height=28
        --set data.image_width=56 --set data.image_channels=1)
run_eval=("${task[@]}" --set eval.enabled=true --set eval.caption_samples=0 --set loop.steps=60 --set loop.log_every=20)
"${mpi[@]}" -np 2 "$train" --config "$config" "${run_eval[@]}" > "$root/idx.log" 2>&1 || fail "IDX run: $(tail -3 "$root/idx.log")"
"${mpi[@]}" -np 2 "$train" --config "$config" "${run_eval[@]}" "${shards[@]}" > "$root/shards.log" 2>&1 ||
  fail "shard run: $(tail -3 "$root/shards.log")"
accuracy() { sed -nE 's/^  zero-shot accuracy +([0-9.]+).*/\1/p' "$1"; }  # the test split's, at the end
a=$(accuracy "$root/idx.log") b=$(accuracy "$root/shards.log")
[[ -n $a && -n $b ]] || fail "no zero-shot accuracy in the logs"
awk -v a="$a" -v b="$b" 'BEGIN { exit !(a - b <= 0.01 && b - a <= 0.01) }' || fail "zero-shot accuracy: IDX $a, shards $b"
[[ $(grep "^step 60/" "$root/idx.log" | cut -d' ' -f1-4) == $(grep "^step 60/" "$root/shards.log" | cut -d' ' -f1-4) ]] ||
  fail "step 60 differs: $(grep "^step 60/" "$root/idx.log" "$root/shards.log")"
echo "zero-shot accuracy after 60 steps: IDX $a, shards $b"
pass "Fashion-MNIST round trip"

echo "== resume on shards: bit-exact for the same layout, no repeats or gaps for another DP size"
const=("${task[@]}" --set optim.min_lr_ratio=1 --set loop.log_every=1)  # a schedule that does not depend on loop.steps
"${mpi[@]}" -np 2 "$train" --config "$config" "${shards[@]}" "${const[@]}" --set loop.steps=12 \
  > "$root/straight.log" 2>&1 || fail "uninterrupted run"
"${mpi[@]}" -np 2 "$train" --config "$config" "${shards[@]}" "${const[@]}" --set loop.steps=6 \
  --set checkpoint.dir="$root/ck" > "$root/first.log" 2>&1 || fail "first half"
"${mpi[@]}" -np 2 "$train" --config "$config" "${shards[@]}" "${const[@]}" --set loop.steps=12 \
  --set checkpoint.dir="$root/ck" --resume latest > "$root/second.log" 2>&1 || fail "second half"
for s in 7 9 12; do
  want=$(grep "^step $s/12 " "$root/straight.log" | cut -d' ' -f1-9)
  got=$(grep "^step $s/12 " "$root/second.log" | cut -d' ' -f1-9)
  [[ -n $want && $got == "$want" ]] || fail "step $s after resume: '$got', uninterrupted: '$want'"
done
"$train" --config "$config" "${shards[@]}" "${const[@]}" --set loop.steps=6 --set checkpoint.dir="$root/ck1" \
  > "$root/one.log" 2>&1 || fail "1 rank to step 6"
"${mpi[@]}" -np 2 "$train" --config "$config" "${shards[@]}" "${const[@]}" --set loop.steps=12 \
  --set checkpoint.dir="$root/ck1" --resume latest > "$root/two.log" 2>&1 || fail "2 ranks resuming"
loss_at() { sed -nE "s/^step $2\/[0-9]+ loss ([0-9.]+).*/\1/p" "$1"; }
for s in 7 12; do
  got=$(loss_at "$root/two.log" $s) want=$(loss_at "$root/straight.log" $s)
  awk -v a="$got" -v b="$want" 'BEGIN { exit !(a != "" && a - b < 2e-4 && b - a < 2e-4) }' ||
    fail "step $s after 1 -> 2 ranks: loss '$got', uninterrupted 2 ranks: '$want'"
done
pass "resume on shards"

echo "== a folder of the user's images and a COCO-style captions file"
mkdir -p "$root/pics"
"$make_images" "$root/pics" 300 > /dev/null || fail "could not generate test images"
rm "$root/pics/img_0007.txt"  # an image without a caption
echo "not a picture" > "$root/notes.png" && : > "$root/empty.png"  # named as images, with captions: skipped
for f in notes empty; do echo "a caption" > "$root/$f.txt"; done
mkdir -p "$root/pics-and-fakes" && cp "$root"/pics/* "$root"/notes.* "$root"/empty.* "$root/pics-and-fakes/"
"$data" convert folder "$root/pics-and-fakes" --out "$root/folder" --shard-samples 128 > "$root/folder.log" 2>&1 ||
  fail "convert folder: $(tail -3 "$root/folder.log")"
grep -q "skipped 1 images without a caption" "$root/folder.log" || fail "the image without a caption was not reported"
grep -q "skipped 2 files that are not PNG or JPEG images" "$root/folder.log" || fail "the fake images: $(tail -3 "$root/folder.log")"
"$data" inspect --show 2 "$root/folder/data-{00000..00002}.tar" > "$root/folder_inspect.log" || fail "inspect folder shards"
grep -q "^samples: 299" "$root/folder_inspect.log" && grep -q "image formats: jpg 149 png 150" "$root/folder_inspect.log" ||
  fail "folder shards: $(cat "$root/folder_inspect.log")"
# One caption whose image is missing.
sed -i 's/"file_name": "img_0003.jpg"/"file_name": "gone.jpg"/' "$root/pics/captions.json"
"$data" convert coco "$root/pics/captions.json" "$root/pics" --out "$root/coco" --prefix coco > "$root/coco.log" 2>&1 ||
  fail "convert coco: $(tail -3 "$root/coco.log")"
grep -q "skipped 2 captions whose image is missing" "$root/coco.log" || fail "coco: $(tail -3 "$root/coco.log")"
"$data" inspect --no-decode "$root/coco/coco-00000.tar" | grep -q "^samples: 448" || fail "coco shards: wrong sample count"
rgb=(--set "data.train_shards=[\"$root/folder/data-{00000..00002}.tar\", \"$root/coco/coco-00000.tar\"]"
     --set data.image_height=28 --set data.image_width=28 --set data.augment=true --set loop.steps=8 --set loop.log_every=4)
"${mpi[@]}" -np 2 "$train" --config "$config" "${rgb[@]}" > "$root/rgb.log" 2>&1 || fail "RGB run: $(tail -3 "$root/rgb.log")"
grep -q "data.train_shards: 747 samples in 4 shards" "$root/rgb.log" && grep -q "^step 8/8 loss [0-9]" "$root/rgb.log" ||
  fail "RGB run: $(grep -E 'data:|step' "$root/rgb.log" | tail -3)"
# A subword tokenizer trained from the captions; a resume with another is refused.
"$data" train-tokenizer --out "$root/tok.model" --vocab 48 "$root/folder/data-{00000..00002}.tar" > "$root/tok.log" 2>&1 ||
  fail "train-tokenizer: $(tail -3 "$root/tok.log")"
grep -qE "tokenizer: $root/tok.model, [0-9]+ pieces" "$root/tok.log" &&
  grep -q '"a red square on the left of a green picture" -> ' "$root/tok.log" || fail "train-tokenizer: $(cat "$root/tok.log")"
"$data" train-tokenizer --out "$root/tok2.model" --vocab 32 "$root/coco/coco-00000.tar" > /dev/null 2>&1 || fail "tok2"
"${mpi[@]}" -np 2 "$train" --config "$config" "${rgb[@]}" --set data.tokenizer_model="$root/tok.model" \
  --set checkpoint.dir="$root/tokck" > "$root/tok_run.log" 2>&1 || fail "run with the tokenizer: $(tail -3 "$root/tok_run.log")"
grep -q "^step 8/8 loss [0-9]" "$root/tok_run.log" || fail "no step 8 with the trained tokenizer"
"$train" --config "$config" "${rgb[@]}" --set data.tokenizer_model="$root/tok2.model" --set loop.steps=10 \
  --set checkpoint.dir="$root/tokck" --resume latest > "$root/tok_resume.log" 2>&1 && fail "resumed with another tokenizer"
grep -q "the tokenizer differs from the one the checkpoint was trained with" "$root/tok_resume.log" ||
  fail "no clear error for another tokenizer: $(tail -3 "$root/tok_resume.log")"
"$train" --config "$config" "${rgb[@]}" --set eval.enabled=true > "$root/rgb_eval.log" 2>&1 &&
  fail "an RGB model was validated on the grey test split"
grep -q "validation needs held-out shards of your data: set eval.shards" "$root/rgb_eval.log" || fail "no clear eval error"
# Validated on held-out shards of its own kind (here the COCO ones), every 4 steps; no class names, no zero-shot.
"${mpi[@]}" -np 2 "$train" --config "$config" "${rgb[@]}" --set eval.enabled=true --set eval.every_steps=4 \
  --set "eval.shards=$root/coco/coco-00000.tar" --set eval.samples=200 > "$root/rgb_val.log" 2>&1 ||
  fail "RGB run with validation: $(tail -3 "$root/rgb_val.log")"
for s in 4 8; do
  chance=$(sed -nE "s/^.*validation at step $s: contrastive loss [0-9.]+, R@1 image->text [0-9.]+ text->image [0-9.]+ \(200 held-out samples, chance ([0-9.]+)\)$/\1/p" "$root/rgb_val.log")
  # At least 1/200; more when captions repeat (R@1 counts an equal caption).
  [[ -n $chance ]] && awk -v c="$chance" 'BEGIN { exit !(c >= 0.0050 && c < 1) }' ||
    fail "RGB validation at step $s: $(grep validation "$root/rgb_val.log")"
done
pass "folder and COCO conversion, RGB training and validation"

echo "== damaged shards: skipped and counted, fatal past data.max_damaged_fraction"
cp "$root/fm/train-0000"{0,1,2}.tar "$root/"
dd if=/dev/urandom of="$root/train-00000.tar" bs=1 seek=700 count=64 conv=notrunc status=none  # inside the first PNG
printf 'not an image' | dd of="$root/train-00001.tar" bs=1 seek=$((512 + 1)) conv=notrunc status=none
head -c 600000 "$root/fm/train-00002.tar" > "$root/train-00002.tar"  # cut short
"$data" inspect "$root/train-0000{0..2}.tar" > "$root/damaged.log" && fail "inspect of damaged shards exits 0"
grep -qE "train-00002.tar: (truncated member|no end-of-archive marker)" "$root/damaged.log" || fail "truncation not reported: $(cat "$root/damaged.log")"
grep -q "train-00000.tar key 000000000: image 000000000.png: bad PNG" "$root/damaged.log" || fail "corrupt PNG not reported"
grep -q "train-00001.tar key 000001000: image 000001000.png: not a JPEG or PNG" "$root/damaged.log" ||
  fail "non-image not reported"
damaged=(--set "data.train_shards=$root/train-0000{0..2}.tar" --set data.image_height=28 --set data.image_width=56
         --set data.image_channels=1 --set loop.steps=4)
"$train" --config "$config" "${damaged[@]}" --set data.max_damaged_fraction=0 > "$root/too_many.log" 2>&1 &&
  fail "damage past data.max_damaged_fraction was accepted"
grep -q "more than data.max_damaged_fraction" "$root/too_many.log" && grep -qE "$root/train-00002.tar: [0-9]+" "$root/too_many.log" ||
  fail "no clear error naming the shards: $(grep -i damaged "$root/too_many.log" | tail -3)"
# The shard cut short lost most of its samples, not one: past the default 1%.
"$train" --config "$config" "${damaged[@]}" > "$root/truncated.log" 2>&1 &&
  fail "a shard cut to a fifth of its bytes passed data.max_damaged_fraction 0.01"
lost=$(grep -oE "$root/train-00002.tar: [0-9]+" "$root/truncated.log" | grep -oE "[0-9]+$")
((lost > 100)) || fail "the shard cut short counts $lost lost samples: $(grep -i damaged "$root/truncated.log" | tail -3)"
# One step over every indexed sample: it meets both damaged images.
indexed=$(sed -nE 's/^samples: ([0-9]+),.*/\1/p' "$root/damaged.log")
"$train" --config "$config" "${damaged[@]}" --set loop.global_batch_size="$indexed" --set loop.steps=1 \
  --set data.max_damaged_fraction=0.9 \
  > "$root/tolerated.log" 2>&1 || fail "tolerable damage stopped the run: $(tail -3 "$root/tolerated.log")"
for key in "00000.tar key 000000000" "00001.tar key 000001000"; do
  grep -q "damaged sample skipped: shard $root/train-$key" "$root/tolerated.log" ||
    fail "damaged $key not logged: $(grep -i damaged "$root/tolerated.log" | head -3)"
done
pass "damaged shards"

echo "data tests: $passed passed, 0 failed"
