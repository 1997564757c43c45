#pragma once
// Note [Contrastive gather]: for exact data-parallel semantics the contrastive
// loss must see every rank's features, as open_clip's gather_with_grad does.
// Forward: allgather the local rows [b, E] into [size * b, E] (rank r's rows
// at r * b). Every rank then computes the same global loss L from the same
// gathered matrix. Backward: open_clip reduce-scatters the gathered gradient,
// summing size identical copies of dL/d(rank r's rows), because every rank's
// L is the same. We take our own slice times size instead: the same value,
// without a collective inside backward. The DP reducer then averages
// parameter gradients over ranks, which divides that factor back out, so N
// ranks with batch b train exactly like one process with batch N x b.

#include <torch/torch.h>

#include "comm/backend.h"

namespace vlm {

// All ranks' rows of `local` ([b, ...], same b on every rank), rank order.
torch::Tensor gather_with_grad(const torch::Tensor& local, Backend& backend, Millis timeout);

}  // namespace vlm
