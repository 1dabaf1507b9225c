// Anchor source for the shared precompiled header target.
#include "core/util/torch_pch.h"
