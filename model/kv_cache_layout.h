#pragma once
// The KV cache the model needs, per text layer, as the checkpoint manifest
// records it (proto/checkpoint.proto), so that an inference process allocates
// exactly what the trained model needs.

#include "model/spec.h"
#include "proto/checkpoint.pb.h"

namespace vlm {

KvCacheLayout kv_cache_layout(const ModelSpec& spec);

}  // namespace vlm
