// Test seams of the engine: what tests replace in its surroundings. Not part of the engine's
// interface for programs (engine.h); EngineOptions::seams points here, and create copies it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "offload/device.h"
#include "offload/io_sys.h"

namespace strata::engine {

struct EngineSeams {
  // The device to train on instead of the one the config chooses (e.g. a host-emulated device
  // whose copies are slowed down).
  std::function<std::unique_ptr<offload::Device>()> device_factory;
  // Called at each point of a checkpoint save ("chunk 3 written", "manifest written", "published",
  // "latest updated").
  std::function<void(const std::string&)> checkpoint_hook;
  // The system calls of the NVMe tier (a fault-injecting IoSys); nullptr: the real ones.
  offload::IoSys* io_sys = nullptr;
};

}  // namespace strata::engine
