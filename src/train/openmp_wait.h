// The CPU GPT model's matmuls run on oneDNN's OpenMP threads; its other kernels and the engine run
// on oneTBB threads on the same cores. OpenMP's default wait policy keeps its threads spinning
// after each matmul, taking the CPU the oneTBB work needs: on a 2-vCPU machine bench/train's
// in-memory step took 178 ms with spinning and 137 ms with OMP_WAIT_POLICY=passive. libgomp reads
// the policy once, when it is loaded (before main), so a program that wants it passive has to be
// started with it.
#pragma once

namespace strata::train {

// Called first in main: when OMP_WAIT_POLICY is not set, sets it to "passive" and runs the same
// program again (execv of its own path with argv); a set policy is left as the user chose it.
// If the exec fails, the program goes on as it is.
void prefer_passive_openmp(char** argv);

}  // namespace strata::train
