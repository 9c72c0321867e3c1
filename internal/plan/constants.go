package plan

// The physical efficiency constants of the model. Each is a property of the
// hardware or of a communication library measured by others, not a knob fitted
// to the validation table: none was chosen by looking at a row's error. The
// README of the planner (docs/planner.md) lists them with their sources.

// Sustained matmul efficiency: the fraction of the dense BF16 peak that the
// best large GEMM holds with the GPU at its power limit (what a training job
// sees, as opposed to the short boost-clock burst).
//
// Source: S. Bekman, "Machine Learning Engineering", compute/accelerator:
// Maximum Achievable Matmul FLOPS (MAMF, boost burst) and Maximum Sustainable
// Matmul FLOPS (MSMF, power-saturated), measured with mamf-finder.py.
// H200 BF16: MSMF 702.9 of 989 TFLOP/s (0.711); the MAMF table marks H100 and
// H200 as the same (MAMF 794.5, 0.803). B200 BF16: MSMF 1455.7 of 2250 (0.647).
// A100 SXM has a MAMF of 267.9-271.2 of 312 (0.859-0.869) but no published
// MSMF, so we scale its MAMF by the MSMF/MAMF ratio measured on H200
// (702.9/828.0 = 0.849) and B200 (1455.7/1732.6 = 0.840): 0.864 x 0.845.
const (
	effA100   = 0.73
	effHopper = 0.71
	effB200   = 0.647
)

// Tile model of a GEMM (see gemm.go). A CUTLASS/cuBLAS tensor-core kernel
// gives each thread block an output tile; with tiles of at least 128x128 the
// operands are re-used enough to keep the tensor cores fed from shared
// memory, smaller tiles are limited by operand bandwidth in proportion to
// their re-use, Tm*Tn/(Tm+Tn). tileSaturation is that re-use for 128x128.
// Source: the CUTLASS default tensor-op tile shapes for sm80/sm90 and NVIDIA's
// "GPU Performance Background" / "Matrix Multiplication Background" user's
// guides (tile and wave quantisation).
const tileSaturation = 64.0

// Memory-bound kernels (LayerNorm, dropout, residual adds, softmax, the
// optimizer step, the epilogue of a GEMM) move data at this fraction of the
// HBM peak. STREAM-class copy and triad kernels reach 0.85-0.9 on A100 and
// H100 (BabelStream results, NVIDIA's own bandwidthTest); framework
// elementwise and LayerNorm kernels run a little below that.
const hbmEff = 0.8

// NVLink collectives: NCCL all-reduce bus bandwidth on 8x A100-SXM4-80GB over
// NVSwitch is 200-208 GB/s of the 300 GB/s per direction (NVIDIA/nccl-tests
// issues #149 and #178), so 0.7 of the one-way NVLink bandwidth.
const nvlinkEff = 0.70

// InfiniBand: NCCL reaches 85-96 GB/s of the 100 GB/s that 4x HDR 200 Gb/s
// give 8 A100s (NVIDIA/nccl-tests issue #119, average and peak over message
// sizes); large gradient and activation messages are at the top of that range.
const ibEff = 0.90

// Latency of one NCCL operation, paid per collective or point-to-point
// message: the order of the small-message times in nccl-tests on NVSwitch
// (tens of microseconds) and over InfiniBand.
const (
	nvlinkLatency = 15e-6
	ibLatency     = 25e-6
)

// Fused (Flash) attention runs the attention core at this fraction of the
// dense peak, forward and backward together. FlashAttention-2 (Dao 2023)
// reports 50-73% of peak forward on A100 and lower backward; FlashAttention-3
// and cuDNN's fused attention reach 60-75% forward on H100.
const flashEff = 0.5

// Per-GPU memory that is not tensors of the model: the CUDA context, cuBLAS
// workspaces and NCCL's channel buffers for the TP, DP and PP communicators.
// PyTorch's CUDA context alone takes 0.3-0.8 GiB on A100 and H100.
const runtimeReserveGiB = 2.0

// Overlapped communication is not free: NCCL runs one thread block per
// channel on an SM of its own, so while a collective overlaps compute those
// SMs do not compute. NCCL opens 16 channels or more for inter-node rings on
// HGX A100/H100 nodes (its NCCL_MAX_NCHANNELS default is 32; DGX logs show
// 16-32), so an overlapped transfer of t seconds costs t*ncclSMs/SMs of
// compute. Source: NCCL's documentation of NCCL_MIN_NCHANNELS /
// NCCL_MAX_NCHANNELS and its channel-per-CTA design.
const ncclSMs = 16
