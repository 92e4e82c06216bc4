/*
 * nnopt.h - the one public header of libnnopt.
 *
 * nnopt trains neural networks in C. A network is a graph of nodes read from a
 * plain-text model file (docs/model-format.md). Parameters, gradients and each
 * optimizer state live in one flat float buffer apiece; activation and workspace
 * memory is planned from shape functions before the first step. Kernels dispatch
 * through a backend (src/backend) so other devices can be added.
 *
 * Conventions:
 *  - Every function that can fail returns nn_status and leaves a one-line message
 *    in the context (nn_ctx_error) naming the file, line or field at fault.
 *  - The library never exits the process and keeps no mutable globals: threads,
 *    RNG and the error message live in an nn_ctx passed explicitly. (OpenBLAS's
 *    kernel choice is process-wide by nature; see nn_blas_core.)
 *  - Dimension letters: N batch, C/H/W input channels/height/width, K output
 *    channels, R/S kernel height/width, P/Q output height/width.
 */
#ifndef NNOPT_H
#define NNOPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_VERSION "0.1.0"

/* ------------------------------------------------------------------ status */

typedef enum {
    NN_OK = 0,
    NN_EINVAL,      /* bad argument, flag value or impossible shape */
    NN_EIO,         /* file missing, unreadable or unwritable */
    NN_EFORMAT,     /* file present but malformed (magic, sizes, syntax) */
    NN_ENOMEM,      /* allocation failed */
    NN_ENUMERIC,    /* NaN or Inf appeared in the loss */
    NN_EUNSUPPORTED, /* valid request this build cannot serve */
    NN_ESTOPPED     /* stopped on request (nn_trainer_request_stop, a signal) */
} nn_status;

/* Short name of a status ("invalid argument", ...). Never NULL. */
const char *nn_status_str(nn_status s);

/* ------------------------------------------------------------------ RNG */

/* PCG32 (O'Neill): 64-bit state, odd increment selects the stream. Plain value
 * type so that its position can be saved in a checkpoint and restored. */
typedef struct {
    uint64_t state;
    uint64_t inc;
} nn_rng;

void nn_rng_seed(nn_rng *rng, uint64_t seed, uint64_t stream);
uint32_t nn_rng_u32(nn_rng *rng);
/* Uniform float in [0, 1) with 24 random bits. */
float nn_rng_uniform(nn_rng *rng);
/* Uniform integer in [0, n), unbiased (rejection sampling). n > 0. */
uint32_t nn_rng_below(nn_rng *rng, uint32_t n);

/* ------------------------------------------------------------------ CPU */

/* What this CPU runs, probed once per process on the first call (CPUID and
 * XGETBV on x86-64; all zero elsewhere). A flag is 1 when the CPU has the
 * instructions and the operating system saves their registers; the AMX flags
 * also need Linux's permission for the tile data, which the probe requests.
 * Every CPU-dependent choice in nnopt (the kernels' ISA, OpenBLAS's core type,
 * the FMA peak loop) reads this. The pointer is valid for the process's life. */
typedef struct {
    int avx2, fma;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512cd;
    int avx512_vnni, avx512_bf16;
    int amx_tile, amx_bf16;
    int cpus;        /* processors this process may run on (omp_get_num_procs) */
    size_t l2_bytes; /* one core's level-2 cache (CPUID 0x80000006); 0: unknown */
} nn_cpu_features;

const nn_cpu_features *nn_cpu_probe(void);

/* Whether large host blocks (4 MiB or more: a network's activations,
 * gradients and parameters) ask Linux for transparent huge pages (on by
 * default; a hint the kernel may decline). Process-wide, read at each
 * allocation; the results are the same bytes either way. */
void nn_set_huge_pages(int on);
int nn_huge_pages(void);

/* ------------------------------------------------------------------ context */

/* Holds thread count, the last error message and the backend in use. */
typedef struct nn_ctx nn_ctx;

/* Instruction-set level of the CPU kernels: each level includes the ones
 * below (AVX2 means AVX2 with FMA; AVX512-BF16 adds the bf16 dot products of
 * --precision bf16; AMX adds the tile matrix unit, which runs the bf16 GEMM). */
typedef enum {
    NN_ISA_GENERIC = 0,
    NN_ISA_AVX2 = 1,
    NN_ISA_AVX512 = 2,
    NN_ISA_AVX512BF16 = 3,
    NN_ISA_AMX = 4
} nn_isa;

/* Arithmetic of the convolutions: fp32, or bf16 inputs with fp32 sums
 * (parameters, gradients, optimizer state and every other op stay fp32). */
typedef enum { NN_PRECISION_FP32 = 0, NN_PRECISION_BF16 = 1 } nn_precision;

/* threads <= 0 means all available cores. The kernels use the best ISA the CPU
 * supports (nn_ctx_set_isa lowers it). The library reads no environment
 * variables: every setting comes through the nn_ctx_set_* calls (nnopt's
 * main() maps NNOPT_ISA, NNOPT_CONV and NNOPT_LOADER onto them). Returns NULL
 * only if out of memory. */
nn_ctx *nn_ctx_new(int threads);
/* ISA in use; setting one the CPU lacks fails with NN_EUNSUPPORTED. */
nn_isa nn_ctx_isa(const nn_ctx *ctx);
nn_status nn_ctx_set_isa(nn_ctx *ctx, nn_isa isa);
/* "generic", "avx512", "avx512bf16" or "amx". */
const char *nn_isa_name(nn_isa isa);
/* The ISA called name (as nn_isa_name writes it) into *isa: NN_OK, or
 * NN_EINVAL for any other string (*isa unchanged). */
nn_status nn_isa_parse(const char *name, nn_isa *isa);
/* Precision of the convolutions (default fp32); set it before nn_net_plan.
 * bf16 runs on any CPU: with AVX512-BF16 at twice the fp32 FLOP rate,
 * otherwise in portable C (slow; for checking results). */
void nn_ctx_set_precision(nn_ctx *ctx, nn_precision p);
nn_precision nn_ctx_precision(const nn_ctx *ctx);
/* Winograd for the fp32 3x3 'same' convolutions that take it (default on;
 * 0 runs the direct sums everywhere): F(2x2,3x3), 2.25x less arithmetic
 * than the direct sums, and with AVX-512 F(4x4,3x3), 4x less, for the
 * forward pass and input gradient of images up to 28 wide; rounding within
 * the tests' tolerance. on = 2: F(2x2,3x3) alone (for comparison); any other
 * non-zero value: both. nn_ctx_winograd: whether it runs (set on, and the
 * kernels are AVX2 or AVX-512). */
void nn_ctx_set_winograd(nn_ctx *ctx, int on);
int nn_ctx_winograd(const nn_ctx *ctx);
/* Software prefetch in the kernels that visit the batch plane by plane
 * (depthwise convolutions, max-pool): while a thread works on one (image,
 * channel) plane it asks for the next plane's lines. Machines and layers
 * differ on whether that pays: on one Zen 4 it took MobileNet-small's
 * depthwise backward from 3.9-4.7 to 2.8-3.3 ms, on another it cost its
 * 28x28 layers 10-20% and helped its 14x14 one (docs/performance.md). mode
 * 1: on, 0: off, NN_PREFETCH_AUTO (the default): each such layer's forward
 * and backward run the first training steps with it on and off by turns,
 * then keep the faster (nn_layer_info.prefetch). The results are the same
 * bits either way. nn_ctx_prefetch returns the mode. */
#define NN_PREFETCH_AUTO (-1)
void nn_ctx_set_prefetch(nn_ctx *ctx, int mode);
int nn_ctx_prefetch(const nn_ctx *ctx);
/* Fusion of element-wise layers into the layer before them (on by default):
 * a ReLU after a convolution, a linear layer, a batch norm or a residual add
 * is applied in that layer's pass over its output, and its gradient mask in
 * that layer's backward pass. Off: every layer runs on its own (for
 * comparison; the results are the same bytes). Read when a model is loaded. */
void nn_ctx_set_fusion(nn_ctx *ctx, int on);
int nn_ctx_fusion(const nn_ctx *ctx);
/* Where nn_loader prepares batches: AUTO (default) in a worker thread when a
 * core is left over beyond the context's threads, else in the caller; THREAD
 * and SYNC force one. The batches are the same in every mode. */
typedef enum { NN_LOADER_AUTO = 0, NN_LOADER_THREAD = 1, NN_LOADER_SYNC = 2 } nn_loader_mode;
void nn_ctx_set_loader_mode(nn_ctx *ctx, nn_loader_mode mode);
nn_loader_mode nn_ctx_loader_mode(const nn_ctx *ctx);
void nn_ctx_free(nn_ctx *ctx);
/* Threads the kernels use now. */
int nn_ctx_threads(const nn_ctx *ctx);
/* The thread count the context was made with (threads <= 0: the cores):
 * nn_net_plan sizes per-thread workspace for this many, so it is the most
 * nn_ctx_set_threads allows. */
int nn_ctx_max_threads(const nn_ctx *ctx);
/* Changes the threads the kernels use, between steps, to n in
 * 1..nn_ctx_max_threads (NN_EINVAL otherwise, threads unchanged): fewer
 * threads than planned is always safe, since every kernel splits its work
 * and workspace over the threads it runs with. Not while a kernel runs (call
 * it from the thread that drives the net, e.g. in a trainer callback).
 * Results are bit-identical for a fixed thread count; a run whose count
 * changes is no longer reproducible bit for bit. */
nn_status nn_ctx_set_threads(nn_ctx *ctx, int n);
/* Cores this process may run on (what threads <= 0 means). More threads than
 * this run, but every parallel loop then waits on threads sharing a core. */
int nn_cpu_cores(void);
/* Caps the memory one network may take, in bytes (0, the default: no cap).
 * nn_net_load/nn_net_parse refuse a model whose parameters and gradients
 * exceed it, and nn_net_plan a plan whose parameters, gradients, buffers,
 * activations, activation gradients and workspace together exceed it, before
 * allocating anything (NN_ENOMEM, the size in MiB in the message). Whatever
 * the cap, the same requests are also refused when they exceed the memory the
 * system has available (MemAvailable in /proc/meminfo), and nn_optim_new
 * refuses state buffers that do. Sizes are computed in 64 bits with overflow
 * checks. */
void nn_ctx_set_max_memory(nn_ctx *ctx, uint64_t bytes);
uint64_t nn_ctx_max_memory(const nn_ctx *ctx);
/* Where the context's networks and optimizers keep their memory and run:
 * "cpu" (the default: host memory), "guard" (the CPU kernels on memory that
 * is mprotect()ed except while a kernel or an explicit copy runs, so host code
 * that touches it directly faults with a message: a check that the code keeps
 * to the device seam, slow, for tests) or "cuda" / "cuda:N" (NVIDIA GPU N,
 * default 0; one device per process). Set it before the first network or
 * optimizer: NN_EINVAL for an unknown name, or once another is in use;
 * NN_EUNSUPPORTED for cuda in a build without CUDA or where there is no such
 * device (the message says which: "no CUDA device (cudaGetDeviceCount: ...)"). */
nn_status nn_ctx_set_backend(nn_ctx *ctx, const char *name);
const char *nn_ctx_backend(nn_ctx *ctx);
/* nn_net_params, nn_net_grads, nn_net_buffers, nn_net_logits and
 * nn_optim_state point into the backend's memory: host code reads and writes
 * it through these copies (memcpy on the CPU backend). */
void nn_ctx_download(nn_ctx *ctx, void *host, const void *dev, size_t bytes);
void nn_ctx_upload(nn_ctx *ctx, void *dev, const void *host, size_t bytes);
/* Last error message, "" if none. Owned by ctx, valid until the next error. */
const char *nn_ctx_error(const nn_ctx *ctx);
/* Records a printf-style message and returns s; lets callers add errors too. */
nn_status nn_ctx_fail(nn_ctx *ctx, nn_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void nn_ctx_clear_error(nn_ctx *ctx);

/* Opens path for reading only if it is a regular file, without blocking on a
 * FIFO or a device on the way (every reader of nnopt opens its files so).
 * Returns a file descriptor (the caller closes it), or -1 with *why set to
 * the reason ("No such file or directory", "a FIFO, not a regular file", ...;
 * valid until the next call). */
int nn_open_regular(const char *path, const char **why);

/* ------------------------------------------------------------------ tensors */

#define NN_MAX_DIMS 4

/* The kind of memory a backend holds (nn_backend.device): host memory for
 * the cpu and guard backends; CUDA for a GPU backend. */
typedef enum { NN_DEVICE_CPU = 0, NN_DEVICE_CUDA = 1 } nn_device;

/* A shape: ndim sizes, outermost first (PyTorch order). */
typedef struct {
    int ndim;
    int64_t dim[NN_MAX_DIMS];
} nn_shape;

/* Number of elements: the product of the sizes (1 for ndim 0); 0 if a size
 * is 0, -1 if one is negative, INT64_MAX if the product does not fit. */
int64_t nn_shape_numel(const nn_shape *s);
/* Writes "16x1x3x3" style text into buf; returns buf. */
char *nn_shape_str(const nn_shape *s, char *buf, size_t size);

/* ------------------------------------------------------------------ data */

/* An image-classification data set held as bytes; converted to normalized
 * floats batch by batch (nn_dataset_gather). */
typedef struct {
    int64_t n;           /* number of samples */
    int c, h, w;         /* image shape; c is 1 for IDX files */
    uint8_t *pixels;     /* (n, c, h, w), 0..255, owned */
    int32_t *labels;     /* (n), owned */
    int num_classes;     /* 1 + max label */
} nn_dataset;

/* Reads an IDX image file (magic 0x00000803) and label file (0x00000801), each
 * gzip-compressed or raw. Checks magic, dimensions, lengths and that the counts
 * agree; errors name the file. labels_path NULL reads images only (labels 0,
 * num_classes 0). */
nn_status nn_idx_load(nn_ctx *ctx, const char *images_path, const char *labels_path,
                      nn_dataset *out);
/* Loads "train" or "t10k" from dir: <prefix>-images-idx3-ubyte[.gz] and
 * <prefix>-labels-idx1-ubyte[.gz]. */
nn_status nn_dataset_load_dir(nn_ctx *ctx, const char *dir, const char *prefix,
                              nn_dataset *out);
void nn_dataset_free(nn_dataset *d);
/* Reads a PNG image (any colour type or depth, converted to 8-bit grayscale
 * with libpng) as a one-sample data set (c = 1, label 0). */
nn_status nn_png_load(nn_ctx *ctx, const char *path, nn_dataset *out);
/* Moves the last n_val samples of d into val (both stay valid and owned). */
nn_status nn_dataset_split(nn_ctx *ctx, nn_dataset *d, int64_t n_val, nn_dataset *val);
/* Keeps only the first n samples (n <= d->n). */
void nn_dataset_truncate(nn_dataset *d, int64_t n);

/* Per-pixel normalization: x = (p / 255 - mean) / std, as torchvision's
 * ToTensor + Normalize compute it in float32. */
typedef struct {
    float mean;
    float std;
} nn_normalize;

/* Fashion-MNIST training-set statistics. */
#define NN_FASHION_MNIST_MEAN 0.2860f
#define NN_FASHION_MNIST_STD 0.3530f
/* Default location of Debian's dataset-fashion-mnist package. */
#define NN_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* Copies samples idx[0..count) into x (count, c, h, w) normalized, and their
 * labels into y (count). idx NULL means samples first..first+count. */
void nn_dataset_gather(const nn_dataset *d, const int64_t *idx, int64_t first,
                       int64_t count, const nn_normalize *norm, float *x, int32_t *y);

/* Fills perm with a permutation of 0..n-1 (Fisher-Yates) drawn from rng. */
void nn_permutation(int64_t *perm, int64_t n, nn_rng *rng);

/* Training-time augmentation, applied per sample in this order (as the
 * torchvision pipeline RandomCrop(size, padding) -> RandomHorizontalFlip ->
 * ToTensor -> Normalize -> RandomErasing): */
typedef struct {
    int crop_pad;        /* random crop of the original size from the image zero-padded
                            by crop_pad pixels on each side (0 = off) */
    int hflip;           /* mirror left-right with probability 0.5 */
    float erase_prob;    /* random erasing with this probability (0 = off): a rectangle of
                            area fraction U(0.02, 0.33) and log-uniform aspect ratio in
                            (0.3, 3.3), set to 0 after normalization */
} nn_augment;

/* nn_dataset_gather of samples idx[0..count), each augmented with random
 * numbers drawn from a stream determined by (seed, epoch, sample index) only,
 * so the result does not depend on threads, batch size or order. aug NULL or
 * all-off = plain gather. */
void nn_dataset_gather_augmented(const nn_dataset *d, const int64_t *idx, int64_t count,
                                 const nn_normalize *norm, const nn_augment *aug, uint64_t seed,
                                 int64_t epoch, float *x, int32_t *y);

/* Background batch loader: a thread prepares (gathers, augments) the next
 * batch while the caller trains on the current one. */
typedef struct nn_loader nn_loader;

nn_status nn_loader_new(nn_ctx *ctx, const nn_dataset *d, int batch, const nn_normalize *norm,
                        const nn_augment *aug, uint64_t seed, nn_loader **out);
/* Starts an epoch over samples perm[0..n) (perm is copied), from batch
 * first_batch (for resumed runs). */
nn_status nn_loader_start(nn_loader *l, int64_t epoch, const int64_t *perm, int64_t first_batch);
/* The same over n <= d->n samples perm[0..n): a data-parallel rank's share of
 * the epoch (its part of every global batch, in order). */
nn_status nn_loader_start_n(nn_loader *l, int64_t epoch, const int64_t *perm, int64_t n,
                            int64_t first_batch);
/* Next batch of the epoch: count (0 at the end of the epoch) and pointers
 * valid until the next call. */
int nn_loader_next(nn_loader *l, const float **x, const int32_t **y);
void nn_loader_free(nn_loader *l);

/* ------------------------------------------------------------------ network */

typedef struct nn_net nn_net;

/* One trainable tensor inside the flat parameter buffer. */
typedef struct {
    char name[128];   /* PyTorch state_dict name, e.g. "conv1.weight" */
    nn_shape shape;   /* PyTorch layout, e.g. (K, C, R, S) */
    size_t offset;    /* index of its first float in the flat buffers */
    size_t numel;
    int fan_in;       /* for initialization */
    int is_bias;
    int init;         /* NN_INIT_DEFAULT or NN_INIT_CONSTANT */
    float init_value; /* every element's value under NN_INIT_CONSTANT (and a buffer's start) */
} nn_param_info;

/* How nn_net_init_params fills a parameter tensor. */
enum {
    NN_INIT_DEFAULT = 0,  /* PyTorch default U(+-1/sqrt(fan_in)), drawn from the RNG */
    NN_INIT_CONSTANT = 1  /* init_value everywhere; draws nothing (batchnorm's 1 and 0) */
};

/* One row of `nnopt info`. */
typedef struct {
    char name[64];
    char op[24];
    nn_shape out;            /* per-sample output shape (no batch dim) */
    int64_t params;
    int64_t flops;           /* forward FLOPs per sample (multiply-add = 2) */
    int64_t bwd_flops;       /* backward FLOPs per sample: weight gradient, plus the
                                input gradient unless the layer reads the image */
    int64_t act_bytes;       /* output activation bytes per sample */
    char kernel[96];         /* conv2d: the kernels its forward pass runs ("winograd",
                                "direct", "rows" or "im2col"; on a GPU "im2col+cublas" or
                                "cudnn fwd A, dgrad B, wgrad C"); "" for other ops */
    int prefetch[2];         /* forward, backward: the software prefetch its plane-by-plane
                                kernels run with (1 on, 0 off: picked under
                                NN_PREFETCH_AUTO, or forced), -1 for other layers and
                                while a pick is still being tried */
} nn_layer_info;

/* Parses a model file and infers every shape. Errors name path:line. */
nn_status nn_net_load(nn_ctx *ctx, const char *path, nn_net **out);
/* Same from text in memory; source names it in messages. */
nn_status nn_net_parse(nn_ctx *ctx, const char *text, const char *source, nn_net **out);
/* The same with values for the model's parameters (its 'params' line):
 * params[i] is "NAME=VALUE"; a name the model does not declare is an error.
 * The structure search builds each trial's model this way. */
nn_status nn_net_load_with(nn_ctx *ctx, const char *path, const char *const *params,
                           int num_params, nn_net **out);
nn_status nn_net_parse_with(nn_ctx *ctx, const char *text, const char *source,
                            const char *const *params, int num_params, nn_net **out);
void nn_net_free(nn_net *net);

/* Sizes and allocates activation, gradient and workspace memory for batches of
 * up to max_batch. Must be called before forward/backward; may be called again. */
nn_status nn_net_plan(nn_net *net, int max_batch);
/* Bytes of planned activation + workspace memory (0 before nn_net_plan). */
size_t nn_net_planned_bytes(const nn_net *net);

/* PyTorch default init: weights kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)),
 * biases U(+-1/sqrt(fan_in)), drawn in parameter order from rng; tensors with
 * init NN_INIT_CONSTANT (batchnorm weight 1, bias 0) are set without drawing.
 * Also resets every buffer to its initial value. */
void nn_net_init_params(nn_net *net, nn_rng *rng);

size_t nn_net_num_params(const nn_net *net);
float *nn_net_params(nn_net *net);          /* flat (num_params) */
float *nn_net_grads(nn_net *net);           /* flat (num_params) */
int nn_net_num_param_tensors(const nn_net *net);
const nn_param_info *nn_net_param_info(const nn_net *net, int i);
/* Index of the named parameter tensor, or -1. */
int nn_net_find_param(const nn_net *net, const char *name);

/* Buffers: state tensors that are saved in checkpoints but not trained and not
 * seen by the optimizer, e.g. batchnorm's "<name>.running_mean" (C),
 * "<name>.running_var" (C) and "<name>.num_batches_tracked" (scalar, ndim 0,
 * a float count), all in one flat float buffer owned by the net. Their info
 * uses the same struct as parameters (offset into nn_net_buffers). */
int nn_net_num_buffer_tensors(const nn_net *net);
const nn_param_info *nn_net_buffer_info(const nn_net *net, int i);  /* NULL if out of range */
float *nn_net_buffers(nn_net *net);                                 /* flat (num_buffers) */
size_t nn_net_num_buffers(const nn_net *net);
/* Index of the named buffer tensor, or -1. */
int nn_net_find_buffer(const nn_net *net, const char *name);

/* Training (1, the default) or eval (0) mode, as torch's module.train()/eval():
 * batchnorm normalizes with the batch's statistics and updates its running
 * statistics in training mode, and uses the running statistics in eval mode. */
void nn_net_set_training(nn_net *net, int training);
int nn_net_training(const nn_net *net);

/* Sets the seed that, with each dropout layer's position and each element's
 * index in the batch, decides which elements that layer drops (a stateless
 * hash, so the same seed gives the same masks on any thread count, and a
 * resumed run that sets the same seeds reproduces them). Default 0. Call it
 * before a training forward; backward reuses the masks of that forward. */
void nn_net_set_dropout_seed(nn_net *net, uint64_t seed);

int nn_net_num_layers(const nn_net *net);
/* The model as plain layer lines, one per layer, with blocks expanded
 * (docs/model-format.md): a file that builds the same graph. */
const char *nn_net_model_text(const nn_net *net);
void nn_net_layer_info(const nn_net *net, int i, nn_layer_info *out);
/* Per-sample input shape (C, H, W) and number of classes (output width). */
nn_shape nn_net_input_shape(const nn_net *net);
int nn_net_num_classes(const nn_net *net);

/* Forward pass on n <= max_batch samples x (n, C, H, W). If labels is not NULL
 * the loss node runs too and *loss gets the mean loss. */
/* The ops' conditions on a batch of n samples in training (1) or eval (0)
 * mode, as nn_net_forward checks them: batch norm's statistics need more than
 * one value per channel in training mode. */
nn_status nn_net_check_batch(nn_net *net, int n, int training);
nn_status nn_net_forward(nn_net *net, const float *x, const int32_t *labels, int n,
                         float *loss);
/* Backward pass of the last forward (which must have had labels): accumulates
 * parameter gradients into the flat gradient buffer. */
nn_status nn_net_backward(nn_net *net);
void nn_net_zero_grad(nn_net *net);
/* Label smoothing of the softmax cross-entropy loss (PyTorch's
 * CrossEntropyLoss(label_smoothing=eps)); 0 by default. eps in [0, 1]. */
nn_status nn_net_set_label_smoothing(nn_net *net, float eps);
/* Logits of the last forward: (n, num_classes). */
const float *nn_net_logits(const nn_net *net);

/* Per-layer timing: when on, forward and backward add each layer's wall time
 * (seconds) to counters read with nn_net_layer_time; turning it on resets them. */
void nn_net_set_timing(nn_net *net, int on);
void nn_net_layer_time(const nn_net *net, int layer, double *forward_s, double *backward_s);

/* Optional callback after each layer's forward (backward = 0) or backward (1)
 * with its start and end wall-clock times in seconds; NULL removes it. Used by
 * `nnopt profile` to write trace events. */
typedef void (*nn_layer_hook)(void *user, int layer, int backward, double start_s, double end_s);
void nn_net_set_hook(nn_net *net, nn_layer_hook hook, void *user);
/* Called in the backward pass after each layer with parameters: the
 * gradients at flat offsets [first_final, num_params) are final for this
 * pass (parameters are laid out in layer order, and backward runs in reverse).
 * The trainer's gradient all-reduce starts its buckets from it. */
typedef void (*nn_grad_hook)(void *user, size_t first_final);
void nn_net_set_grad_hook(nn_net *net, nn_grad_hook hook, void *user);
/* A reducer: sums buf[0..n) (doubles in the kernels' memory) over the
 * data-parallel ranks in place, blocking; every rank gets the same values.
 * Called from inside kernels, on the thread that runs the pass. With one set,
 * batch norm in training mode takes its statistics over all ranks' samples
 * (synchronized batch norm): the forward pass sums each channel's values and
 * sample count, then its squared deviations from the global mean; the
 * backward pass sums each channel's dy and dy (x - mean), each rank's
 * weighted by its samples (a rank's dy is that of its own mean loss; the
 * objective is the mean over all ranks' samples, as the trainer weights the
 * gradients). Parameter gradients stay per rank (the gradient all-reduce
 * averages them). Every rank must run the same passes. A failure is the
 * reducer's to record (kernels return nothing): the trainer checks it after
 * each pass. NULL (the default): statistics over this process's batch. */
typedef nn_status (*nn_reducer)(void *user, double *buf, size_t n);
void nn_net_set_reducer(nn_net *net, nn_reducer reduce, void *user);
/* Data-parallel ranks inside one process. With K > 1 shards every
 * training forward and backward on n samples runs as K contiguous shards,
 * shard k = samples k n / K up to (k + 1) n / K (the trainer's split of a
 * global batch over K ranks), and every kernel is called on one shard as a
 * rank holding just that shard would call it, so it computes the same
 * bytes. Batch norm takes its statistics over all shards (synchronized batch
 * norm) and adds the shards' sums in shard order, the order in which the
 * reducer adds two ranks'. Shard k's parameter gradients go to
 * nn_net_shard_grads(net, k) (shard 0's are nn_net_grads), and
 * nn_net_zero_grad zeroes them all: combining them is the caller's, as the
 * ranks' all-reduce would (the trainer's cfg.shards). The loss is the mean
 * over all samples. Eval-mode passes run whole. Backends with the CPU kernels; 1 (the
 * default): whole batches. Fails for layers that keep data for the whole
 * batch (none of batch norm's kind) and above 64 shards. */
nn_status nn_net_set_shards(nn_net *net, int shards);
int nn_net_shards(const nn_net *net);
float *nn_net_shard_grads(nn_net *net, int k);   /* NULL outside 0..shards-1 */
/* Wall-clock seconds on the clock the hook uses. */
double nn_wall_time(void);

/* ------------------------------------------------------------------ optimizer */

typedef enum {
    NN_OPTIM_SGD = 0,
    NN_OPTIM_ADAM,
    NN_OPTIM_ADAMW,
    NN_OPTIM_RMSPROP,
    NN_OPTIM_ADAGRAD,
    NN_OPTIM_COUNT
} nn_optim_kind;

/* Options with torch.optim's names and meanings; fields an optimizer does not
 * use are ignored. Start from nn_optim_defaults(kind) to get PyTorch's
 * defaults (SGD has no default lr: 0.01 here). */
typedef struct {
    nn_optim_kind kind;
    float lr;
    float momentum;      /* SGD, RMSprop */
    float dampening;     /* SGD */
    float weight_decay;  /* all; AdamW: decoupled */
    int nesterov;        /* SGD */
    float beta1, beta2;  /* Adam, AdamW */
    float eps;           /* Adam, AdamW, RMSprop, Adagrad */
    int amsgrad;         /* Adam, AdamW */
    float alpha;         /* RMSprop smoothing constant */
    int centered;        /* RMSprop */
    float lr_decay;      /* Adagrad */
    float initial_accumulator_value; /* Adagrad */
} nn_optim_config;

nn_optim_config nn_optim_defaults(nn_optim_kind kind);
/* "sgd", "adam", "adamw", "rmsprop", "adagrad"; NULL for an unknown kind. */
const char *nn_optim_name(nn_optim_kind kind);
/* Kind from a name; returns -1 if unknown. */
int nn_optim_kind_from_name(const char *name);

/* Optimizer state lives in flat buffers the size of the parameter buffer. */
typedef struct nn_optimizer nn_optimizer;

nn_status nn_optim_new(nn_ctx *ctx, const nn_optim_config *cfg, size_t num_params,
                       nn_optimizer **out);
void nn_optim_free(nn_optimizer *opt);
/* One update of params from grads, following torch.optim exactly. */
void nn_optim_step(nn_optimizer *opt, nn_ctx *ctx, float *params, const float *grads);
/* Number of state buffers, and each one's name ("momentum_buffer") and data.
 * A buffer may be absent until the first step: nn_optim_steps tells. */
int nn_optim_num_states(const nn_optimizer *opt);
float *nn_optim_state(nn_optimizer *opt, int i, const char **name);
int64_t nn_optim_steps(const nn_optimizer *opt);
void nn_optim_set_steps(nn_optimizer *opt, int64_t steps);
const nn_optim_config *nn_optim_get_config(const nn_optimizer *opt);
/* Changes the learning rate used by the following steps (schedules). */
void nn_optim_set_lr(nn_optimizer *opt, float lr);

/* Scales grads in place so that their global L2 norm is at most max_norm, as
 * torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6));
 * returns the norm before clipping. */
double nn_clip_grad_norm(float *grads, size_t n, double max_norm, nn_ctx *ctx);
/* Its two halves, for gradients split over processes (pipeline stages): the
 * sum of squares of grads (double, in a fixed order), and the scaling of
 * grads given the global norm (returns it). */
double nn_grad_sum_squares(const float *grads, size_t n, nn_ctx *ctx);
double nn_clip_grad_scale(float *grads, size_t n, double norm, double max_norm, nn_ctx *ctx);
/* Weight averaging: avg (n) += w * (params - avg), element by element (the
 * same result for any thread count), in the context's backend memory. */
void nn_weight_average(float *avg, const float *params, size_t n, float w, nn_ctx *ctx);

/* ------------------------------------------------------------------ schedules */

/* Learning-rate schedules with torch.optim.lr_scheduler's semantics. A
 * schedule is stepped once per epoch (step/multistep/exponential/cosine/
 * cosine_restarts/plateau) or once per optimizer step (onecycle, and the
 * linear warm-up, whose length is counted in optimizer steps). */
typedef enum {
    NN_SCHED_CONSTANT = 0,
    NN_SCHED_STEP,            /* lr * gamma^(epoch / step_size) */
    NN_SCHED_MULTISTEP,       /* lr * gamma^(number of milestones <= epoch) */
    NN_SCHED_EXPONENTIAL,     /* lr * gamma^epoch */
    NN_SCHED_COSINE,          /* CosineAnnealingLR(T_max, eta_min) */
    NN_SCHED_COSINE_RESTARTS, /* CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) */
    NN_SCHED_ONECYCLE,        /* OneCycleLR(max_lr = lr, total_steps, pct_start,
                                 div_factor, final_div_factor), cosine anneal */
    NN_SCHED_PLATEAU,         /* ReduceLROnPlateau(mode min, factor, patience,
                                 threshold rel, cooldown, min_lr) */
    NN_SCHED_COUNT
} nn_sched_kind;

#define NN_MAX_MILESTONES 16

typedef struct {
    nn_sched_kind kind;
    float base_lr;
    float gamma;               /* step, multistep, exponential */
    int step_size;             /* step */
    int milestones[NN_MAX_MILESTONES];
    int num_milestones;        /* multistep */
    int t_max;                 /* cosine (epochs) */
    int t_0, t_mult;           /* cosine_restarts */
    float eta_min;             /* cosine, cosine_restarts */
    int64_t total_steps;       /* onecycle (optimizer steps) */
    float pct_start, div_factor, final_div_factor; /* onecycle */
    float factor, threshold, min_lr; /* plateau */
    int patience, cooldown;    /* plateau */
    int64_t warmup_steps;      /* linear warm-up from warmup_start_factor * lr
                                  over this many optimizer steps (0 = none),
                                  multiplying whatever the schedule gives */
    float warmup_start_factor;
} nn_sched_config;

/* Where a schedule stands; saved in checkpoints so resume stays exact. */
typedef struct {
    double best;               /* plateau: best metric so far */
    int bad_epochs;            /* plateau */
    int cooldown_left;         /* plateau */
    float plateau_lr;          /* plateau: current lr */
} nn_sched_state;

nn_sched_config nn_sched_defaults(nn_sched_kind kind, float base_lr);
const char *nn_sched_name(nn_sched_kind kind);
int nn_sched_kind_from_name(const char *name);
/* Checks a configuration; errors name the offending field. */
nn_status nn_sched_validate(nn_ctx *ctx, const nn_sched_config *cfg);
void nn_sched_state_init(const nn_sched_config *cfg, nn_sched_state *st);
/* Learning rate for the optimizer step that is number `step` (0-based) of the
 * run, inside epoch `epoch` (0-based). */
float nn_sched_lr(const nn_sched_config *cfg, const nn_sched_state *st, int64_t epoch,
                  int64_t step);
/* Plateau only: reports the epoch's validation (or test) loss. */
void nn_sched_observe(const nn_sched_config *cfg, nn_sched_state *st, double metric);

/* ------------------------------------------------------------------ safetensors */

/* Element types of safetensors data ("F32", ...). NN_ST_F32 is 0, so a
 * zero-initialized nn_st_tensor is float32. */
typedef enum {
    NN_ST_F32 = 0,
    NN_ST_F16,  /* IEEE binary16 */
    NN_ST_BF16, /* bfloat16: the upper half of a float32 */
    NN_ST_F64,
    NN_ST_I32,
    NN_ST_I64,
    NN_ST_NUM_DTYPES
} nn_st_dtype;

/* The dtype's name in the format ("F32", "I64", ...), or NULL if out of range. */
const char *nn_st_dtype_name(nn_st_dtype dtype);

/* A tensor to write, or one found in a file. data is always float32 (numel
 * values, row-major). dtype is how the file stores it: on write, NN_ST_F32 or
 * NN_ST_I64 (each value must then be an integer in [-2^63, 2^63), as
 * PyTorch's int64 counters); on read, the file's dtype, with data pointing
 * into the file's in-memory copy (valid until nn_safetensors_close) converted
 * to float32 bit for bit as PyTorch's .to(torch.float32) does: F16 and BF16
 * exactly, F64, I32 and I64 rounded to nearest even; NaN and infinities kept. */
typedef struct {
    char name[128];
    nn_shape shape;
    const float *data;
    nn_st_dtype dtype;
} nn_st_tensor;

/* Writes tensors and string metadata (meta_keys[i] = meta_vals[i]) to path
 * atomically: a temporary file in the same directory, fsync, rename. A dtype
 * other than F32 or I64, or an I64 value that is not an integer in range,
 * fails with NN_EINVAL before anything is written. */
nn_status nn_safetensors_write(nn_ctx *ctx, const char *path, const nn_st_tensor *tensors,
                               int count, const char *const *meta_keys,
                               const char *const *meta_vals, int meta_count);

typedef struct nn_st_file nn_st_file;

/* Reads and validates a whole safetensors file: header length, JSON, dtypes
 * (F32, F16, BF16, F64, I32 and I64, all read as float32; another dtype of the
 * format fails with NN_EUNSUPPORTED), shapes, and that every offset range lies
 * inside the file and ranges do not overlap. */
nn_status nn_safetensors_open(nn_ctx *ctx, const char *path, nn_st_file **out);
void nn_safetensors_close(nn_st_file *f);
int nn_safetensors_count(const nn_st_file *f);
const nn_st_tensor *nn_safetensors_get(const nn_st_file *f, int i);
/* The named tensor, or NULL. */
const nn_st_tensor *nn_safetensors_find(const nn_st_file *f, const char *name);
/* Metadata value for key, or NULL. */
const char *nn_safetensors_meta(const nn_st_file *f, const char *key);

/* ------------------------------------------------------------------ checkpoints */

/* Where training stands, saved with a checkpoint so a resumed run continues
 * exactly. */
typedef struct {
    int64_t epoch;          /* epochs completed */
    int64_t step;           /* optimizer steps completed in total */
    int64_t batch_in_epoch; /* batches completed in the current epoch */
    double loss_sum;        /* sum of batch losses x batch size in the epoch so far */
    int64_t seen;           /* samples seen in the current epoch so far */
    uint64_t seed;          /* the run's seed */
    nn_rng rng;             /* the training RNG's position */
    nn_sched_state sched;   /* learning-rate schedule (plateau) state */
    double best_val;        /* early stopping: best validation loss so far */
    int64_t bad_epochs;     /* early stopping: epochs since it improved */
    /* early stopping: the best epoch's parameters, then buffers
     * (num_params + num_buffers), or NULL; in the backend's memory, not
     * owned. Saved as "__best__.<name>" tensors when have_best; a load into a
     * state whose best is not NULL fills it from those tensors and sets
     * have_best (0 when the file has none). Weights-only loads ignore them. */
    float *best;
    int have_best;
    /* weight averaging (nn_train_config.ema): the averaged parameters
     * (num_params), or NULL; in the backend's memory, not owned. Saved as
     * "__ema__.<name>" tensors when not NULL; a load into a state whose ema is
     * not NULL fills it from those tensors, which the file must hold.
     * ema_swapped 1: the net holds the averaged weights and ema the live ones
     * (the run finished) */
    float *ema;
    int ema_swapped;
    /* what the run trains on, so that a resume can refuse other data or
     * batching: samples per batch, batches per optimizer step, training
     * samples and a 64-bit FNV-1a hash of the training labels in order (each
     * as 4 little-endian bytes). batch 0: not recorded (none are saved; a
     * file written before they were, loads as 0). */
    int64_t batch, accumulate, train_samples;
    uint64_t train_labels_hash;
} nn_train_state;

/* Saves parameters under their PyTorch names; if opt is given also its state
 * as "optimizer.<param>.<state>" tensors, and if st is given the train state as
 * metadata (and st->best as "__best__.<name>" tensors when st->have_best,
 * st->ema as "__ema__.<name>" tensors when set). Atomic. */
nn_status nn_checkpoint_save(nn_ctx *ctx, const char *path, nn_net *net,
                             nn_optimizer *opt, const nn_train_state *st);
/* Loads parameters (every one must be present with the right shape; extra
 * tensors other than "optimizer.*", "__best__.*" and "__ema__.*" are errors).
 * If opt/st are given, the file must hold them (a --resume checkpoint);
 * "__best__.*" tensors, when the file has any, must then name every parameter
 * and buffer (they go to st->best, or are ignored when it is NULL);
 * "__ema__.*" tensors must name every parameter when st->ema is set (and are
 * ignored when it is NULL). */
nn_status nn_checkpoint_load(nn_ctx *ctx, const char *path, nn_net *net,
                             nn_optimizer *opt, nn_train_state *st);

/* ------------------------------------------------------------------ hardware */

/* Measures the sgemm throughput nnopt gets on this machine with the context's
 * threads: the best of `repeats` runs of an n x n x n product through the same
 * GEMM path the kernels use. Returns GFLOP/s, or 0 if out of memory. */
double nn_measure_sgemm_gflops(nn_ctx *ctx, int n, int repeats);

/* Measures the FMA peak with the context's threads: independent chains of
 * fused multiply-adds in registers, the widest vectors the CPU has (*isa:
 * "avx512", "avx2+fma" or "sse"). GFLOP/s; about 0.1 s on a 2 GHz core. */
double nn_measure_fma_gflops(nn_ctx *ctx, const char **isa);

/* One short run of the same chains, `iters` rounds of 12 FMAs per thread:
 * returns the GFLOP done and sets *seconds to the time taken (and *isa as
 * above, when isa is not NULL). Registers only,
 * so it leaves the caches as they were: `nnopt bench` runs one after every
 * timed step to sample the machine's FMA limit over the same seconds. */
double nn_fma_burst(nn_ctx *ctx, long iters, double *seconds, const char **isa);

/* The context's device where it is not the CPU (nnopt bench --device cuda):
 * its name and, if measure, its limits: the fp32 FMA peak of its cores, and
 * what its BLAS reaches on an 8192^3 product in fp32 and in bf16 (tensor
 * cores), in GFLOP/s (0: not measured). Returns 0 on such a device, -1 on
 * the CPU (nn_measure_fma_gflops and nn_measure_sgemm_gflops measure it). */
typedef struct {
    char name[128];
    double fma_gflops, sgemm_gflops, bf16_gemm_gflops;
} nn_device_peaks;
int nn_measure_device_peaks(nn_ctx *ctx, int measure, nn_device_peaks *out);

/* The BLAS kernels in use: OpenBLAS's core type name ("Cooperlake", ...).
 * OpenBLAS chooses them from the CPU model when it loads (OPENBLAS_CORETYPE
 * overrides that); a release older than the CPU falls back to SSE3 kernels
 * ("Prescott"), several times slower. The choice is process-wide. */
const char *nn_blas_core(void);
/* The OpenBLAS core types with AVX2 or wider kernels that this CPU runs, by
 * OpenBLAS's own rules, best first: "Cooperlake", "SkylakeX", "Haswell" (any
 * of them may be missing). Up to max names into names; returns how many. */
int nn_blas_cpu_cores(const char **names, int max);
/* The core type nnopt advises in place of OpenBLAS's own choice, or NULL to
 * keep it: the first of nn_blas_cpu_cores, only where OpenBLAS's choice is
 * of an older instruction set (SSE3 kernels on an AVX2 CPU, AVX2 ones on an
 * AVX-512 CPU). A rule on the CPU's features, not a timing. */
const char *nn_blas_advised_core(void);
/* Has OpenBLAS choose its kernels again, as when it loaded: it reads
 * OPENBLAS_CORETYPE, which the caller sets first (to nn_blas_advised_core();
 * the library itself reads and writes no environment variable). OpenBLAS's
 * idle threads are stopped first, since they would choose at the same time.
 * Process-wide: call from main() before any GEMM and before other threads use
 * nnopt or OpenBLAS. NN_EUNSUPPORTED where this OpenBLAS cannot (not built
 * with DYNAMIC_ARCH). Afterwards nn_blas_replaced_core names OpenBLAS's own
 * choice; before, or when the kernels stayed the same, it returns NULL. */
nn_status nn_blas_rechoose(void);
const char *nn_blas_replaced_core(void);

/* ------------------------------------------------------------------ training */

/* Pipeline schedules (nn_train_config.pipeline). */
typedef enum { NN_PIPELINE_1F1B = 0, NN_PIPELINE_GPIPE = 1 } nn_pipeline_schedule;
/* How the stages are balanced: each layer's measured time on a micro-batch
 * (default), or its FLOPs. */
typedef enum { NN_BALANCE_TIME = 0, NN_BALANCE_FLOPS = 1 } nn_stage_balance;

/* The whole training recipe: what a recipe file and `nnopt train`'s flags
 * describe. nn_train_config_defaults gives the seed recipe (SGD lr 0.01,
 * momentum 0.9, batch 64, 5 epochs, seed 1, shuffled, Fashion-MNIST
 * normalization, no augmentation). */
typedef struct {
    int epochs;             /* epochs to train, counted from the run's start */
    int batch;              /* samples per forward pass (the last one partial) */
    int accumulate;         /* batches added up per optimizer step (mean) */
    uint64_t seed;          /* shuffling, augmentation and dropout streams; the
                               caller initializes the weights */
    int shuffle;            /* 1: a new permutation every epoch; 0: file order */
    nn_normalize norm;
    nn_augment aug;
    nn_optim_config optim;
    nn_sched_config sched;  /* t_max 0: the whole run; total_steps <= 0: every
                               optimizer step of the run */
    float label_smoothing;  /* training loss only; reported losses are plain */
    float clip_grad_norm;   /* global L2 norm of the gradients (0 = off) */
    float ema;              /* weight averaging (0 = off; else in (0, 1)): after
                               optimizer step s the averaged parameters move to
                               the live ones by 1 - min(ema, (1 + s) / (10 + s));
                               evaluations, early stopping's best copy and the
                               finished run's weights are the averaged ones
                               (batch-norm statistics stay the live ones) */
    int early_stop;         /* stop when the validation loss has not improved by
                               more than min_delta for this many epochs (0 = off);
                               the best epoch's weights are restored */
    float min_delta;
    const char *save;       /* checkpoint after every epoch (NULL: none); atomic,
                               and never with non-finite values */
    int save_every;         /* also every save_every optimizer steps (0 = off) */
    int sync_bn;            /* data parallel: batch norm's statistics over the
                               global batch (all ranks), not each rank's share */
    int stages;             /* pipeline parallel: the graph cut into this many
                               stages over the communicator's ranks (0 or 1: none;
                               ranks / stages data-parallel replicas of it) */
    int micro_batches;      /* pipeline: micro-batches per batch (0: 2 x stages) */
    nn_pipeline_schedule pipeline; /* pipeline: 1F1B (default) or GPipe */
    nn_stage_balance stage_balance; /* pipeline: cut by measured time (default) or FLOPs */
    int shards;             /* data parallel in a fixed order (0 or 1: off): every
                               global batch is computed as this many data-parallel
                               ranks would compute it, each one shard, so that 1
                               process and `shards` ranks give the same bytes
                               (nn_net_set_shards; the ranks' gradients are
                               added in rank order). Runs on 1 process or on
                               exactly `shards` ranks; batch norm needs sync_bn */
} nn_train_config;

nn_train_config nn_train_config_defaults(void);

/* One optimizer step's report (after each batch, for progress displays). */
typedef struct {
    int64_t epoch;          /* 0-based epoch in progress */
    int64_t batch;          /* batches of this epoch done */
    int64_t batches;        /* batches per epoch */
    int64_t step;           /* optimizer steps done in the run */
    double mean_loss;       /* mean training loss of the epoch so far */
} nn_batch_report;

/* One epoch's report, after its evaluation. */
typedef struct {
    int64_t epoch;          /* epochs completed (1-based number of this one) */
    int64_t step;
    float lr;               /* learning rate of the epoch's last step */
    double train_loss;      /* mean over the epoch's batches (with smoothing) */
    int has_test, has_val;
    double test_loss, test_accuracy; /* accuracy as a fraction */
    double val_loss, val_accuracy;
    double seconds, eval_seconds, images_per_s;
    /* data parallel: seconds the epoch's steps stood waiting for gradient
     * all-reduces, and seconds of all-reduce that ran while the backward
     * pass computed (overlapped); 0 for one process */
    double comm_wait_s, comm_overlap_s;
    int early_stop;         /* early stopping ends the run after this epoch */
    double best_val_loss;   /* early stopping: the best validation loss so far */
} nn_epoch_report;

/* Hooks of a driver (the CLI, compare, a search): any may be NULL. */
typedef struct {
    /* an epoch starts (or resumes) at batch first_batch of batches */
    void (*epoch_start)(void *user, int64_t epoch, int64_t first_batch, int64_t batches);
    void (*batch_done)(void *user, const nn_batch_report *r);
    /* returns nonzero to end the run after this epoch (a pruner's decision) */
    int (*epoch_done)(void *user, const nn_epoch_report *r);
    void *user;
} nn_train_callbacks;

/* A communicator: how data-parallel workers exchange parameters and
 * gradients. The trainer broadcasts the parameters and buffers from rank 0
 * when a communicator is set, and in every optimizer step averages the flat
 * gradient buffer over the ranks in buckets, in reverse layer order, each
 * started as soon as the backward pass has made its gradients final and all
 * waited for before the optimizer step. No communicator (the default) is the
 * single process: nothing is exchanged. MPI (nn_mpi_comm_new) and NCCL fill
 * in the functions. Every rank must end with the same bytes: the average is
 * the same on all ranks, not merely close. */
typedef struct nn_comm nn_comm;
struct nn_comm {
    int rank, size;
    /* starts averaging buf[0..n) over the ranks in place; *req names it */
    nn_status (*allreduce_start)(nn_comm *c, float *buf, size_t n, int *req);
    /* waits for the all-reduce req to complete */
    nn_status (*wait)(nn_comm *c, int req);
    /* copies buf[0..n) of rank root to every rank */
    nn_status (*broadcast)(nn_comm *c, float *buf, size_t n, int root);
    void *impl;
    /* sums buf[0..n) (host memory) over the ranks in place, blocking: the
     * training loss and sample counts. NULL: the scalars stay per rank (a
     * test communicator). */
    nn_status (*sum_f64)(nn_comm *c, double *buf, size_t n);
    /* Pipeline stages (NULL: this communicator has none). send_start starts
     * sending buf[0..n) to rank peer (wait(req) completes it; buf stays
     * untouched until then); recv receives n floats from peer, blocking;
     * messages between two ranks with one tag arrive in order. */
    nn_status (*send_start)(nn_comm *c, const float *buf, size_t n, int peer, int tag, int *req);
    nn_status (*recv)(nn_comm *c, float *buf, size_t n, int peer, int tag);
    /* The ranks of c with the same color, ordered by key: a new communicator
     * (collective over c), freed with its release. */
    nn_status (*split)(nn_comm *c, int color, int key, nn_comm **out);
    void (*release)(nn_comm *c);
    /* 1: allreduce_start and sum_f64 add the ranks' values in rank order,
     * ((r0 + r1) + r2) + ..., as one process adds its shards (cfg.shards), so
     * that every world size gives the same bytes; 0 (the default): the
     * order the library picks (the same for two ranks). Set by the trainer. */
    int ordered;
    /* optional: lets the requests in flight move on without waiting (MPI
     * progresses non-blocking collectives only inside its calls); the
     * trainer calls it as layers' gradients become final */
    void (*progress)(nn_comm *c);
};

/* MPI (src/dist/mpi.c). In a build without MPI (NN_HAVE_MPI undefined) these
 * fail with NN_EUNSUPPORTED and nn_mpi_available returns 0. */
int nn_mpi_available(void);
/* MPI_Init_thread (funneled: only the calling thread talks to MPI). Once per
 * process, from main(); returns NN_EUNSUPPORTED without MPI, NN_EIO if MPI
 * fails to start. */
nn_status nn_mpi_init(int *argc, char ***argv);
/* MPI_Finalize after a clean run; nn_mpi_abort(code) after a failure, so the
 * other ranks stop instead of waiting in a collective for ever. */
void nn_mpi_finalize(void);
void nn_mpi_abort(int code);
/* A communicator over MPI_COMM_WORLD (a duplicate): averages with
 * MPI_Iallreduce (in place, sum, then / size), or through shared memory when
 * every rank runs on this machine (nn_mpi_comm_set_shared_memory);
 * broadcasts with MPI_Bcast.
 * Errors go to ctx. Free with nn_mpi_comm_free. */
nn_status nn_mpi_comm_new(nn_ctx *ctx, nn_comm **out);
void nn_mpi_comm_free(nn_comm *c);
/* The watchdog: a collective that has made no progress for `seconds`
 * (default 20; 0: wait for ever) pings the other ranks and fails naming the
 * ones that do not answer within 3 s ("rank 1 stopped answering"); the
 * caller then aborts the job. */
void nn_mpi_comm_set_timeout(nn_comm *c, double seconds);
/* Where every rank runs on one machine and the buffers are host memory,
 * gradient all-reduces go through shared memory (src/dist/mpi_shm.c), not
 * MPI_Iallreduce: on (the default) or off. Set before the first all-reduce,
 * the same on every rank. */
void nn_mpi_comm_set_shared_memory(nn_comm *c, int on);
/* "shared memory" or "MPI_Iallreduce": what the gradient all-reduces use. */
const char *nn_mpi_comm_allreduce_name(const nn_comm *c);

/* The training loop as a library object: the one loop that `nnopt train`,
 * `compare`, `bench` and `profile` drive. */
typedef struct nn_trainer nn_trainer;

/* A trainer for net (loaded, planned for cfg->batch and initialized by the
 * caller; not owned) on train, evaluated after every epoch on val and test
 * (each may be NULL; train may be NULL for nn_trainer_step_batch alone). The
 * data sets must outlive the trainer. Creates the optimizer and the batch
 * loader; validates the recipe (errors name the field). */
nn_status nn_trainer_new(nn_net *net, const nn_train_config *cfg, const nn_dataset *train,
                         const nn_dataset *val, const nn_dataset *test, nn_trainer **out);
void nn_trainer_free(nn_trainer *t);
void nn_trainer_set_callbacks(nn_trainer *t, const nn_train_callbacks *cb);
/* Trains with a communicator (not owned; NULL: one process), gradients
 * averaged in buckets of bucket_bytes (0: 25 MB, as DDP). Broadcasts the
 * parameters and buffers from rank 0 now. With size P > 1 the run is data
 * parallel: the global batch is P x cfg->batch, every rank draws the same
 * permutation and trains on its contiguous share of each global batch (the
 * last one split as evenly as it goes), each rank's gradient weighted by its
 * share of the samples, so P ranks reproduce one process with batch P x
 * batch (up to float rounding; batch norm's statistics stay per rank unless
 * cfg->sync_bn, which sets the net's reducer: nn_net_set_reducer).
 * Epochs count global batches, reported losses are global, checkpoints
 * record the global batch and only rank 0 writes them; every rank must call
 * nn_trainer_save and nn_trainer_epoch (they are collective). Call it before
 * nn_trainer_resume (every rank loads the same file), before the first
 * step. With cfg->stages = K > 1 the P ranks form P / K data-parallel
 * replicas of a K-stage pipeline (src/train/pipeline.c): rank r is stage
 * K-1 - r % K of replica r / K, the global batch is P / K x cfg->batch, each
 * replica's share split into cfg->micro_batches; the net is planned again for
 * micro-batches. The communicator needs send_start, recv and split. */
nn_status nn_trainer_set_comm(nn_trainer *t, nn_comm *comm, size_t bucket_bytes);
/* Pipeline parallel: the stages' layer ranges ("conv1..pool1 | conv2..loss"),
 * or NULL. */
const char *nn_trainer_pipeline(const nn_trainer *t);
/* Continues from a checkpoint written by the trainer (weights, optimizer,
 * schedule, early stopping and its best weights, RNG and position in the
 * epoch). The batch, the accumulation and the training set (its size and
 * labels) must be the ones it was written with: another fails with NN_EINVAL
 * naming the file, what differs and both values (checkpoints written before
 * these were recorded are not checked, and take this run's). */
nn_status nn_trainer_resume(nn_trainer *t, const char *path);
/* One optimizer step on the next `accumulate` batches of the current epoch
 * (starting one if needed). *epoch_end (may be NULL) is set when the epoch's
 * batches are all done; nn_trainer_epoch then finishes it. */
nn_status nn_trainer_step(nn_trainer *t, int *epoch_end);
/* One optimizer step on a batch the caller holds: x (n, C, H, W) normalized,
 * y (n); n <= the planned batch. The step of benchmarks and of drivers with
 * their own data. */
nn_status nn_trainer_step_batch(nn_trainer *t, const float *x, const int32_t *y, int n,
                                float *loss);
/* Trains the rest of the current epoch, evaluates, steps the schedule and
 * early stopping, reports (epoch_done) and checkpoints. Non-finite test or
 * validation losses stop with NN_ENUMERIC naming the epoch; the last
 * checkpoint written stays in place. */
nn_status nn_trainer_epoch(nn_trainer *t, nn_epoch_report *report);
/* Epochs until cfg->epochs, early stopping or a callback ends the run. */
nn_status nn_trainer_run(nn_trainer *t);
/* Whether the run is over (epochs done, early stop, a callback's decision). */
int nn_trainer_finished(const nn_trainer *t);
/* Mean plain cross-entropy and accuracy over d in eval mode. Data parallel
 * (a communicator of P > 1 ranks with sum_f64): collective, every rank calls
 * it; each evaluates its contiguous 1/P of d and the sums are added over the
 * ranks, so every rank gets the whole set's figures. */
nn_status nn_trainer_evaluate(nn_trainer *t, const nn_dataset *d, double *loss,
                              double *accuracy);
/* Writes a resumable checkpoint (atomic). */
nn_status nn_trainer_save(nn_trainer *t, const char *path);
/* Asks the trainer to stop after the optimizer step in progress: it then
 * writes a checkpoint (if cfg->save) and returns NN_ESTOPPED. Only sets a
 * flag: safe in a signal handler. */
void nn_trainer_request_stop(nn_trainer *t);
const nn_train_state *nn_trainer_state(const nn_trainer *t);
nn_optimizer *nn_trainer_optimizer(nn_trainer *t);
/* Batches and optimizer steps per epoch. */
int64_t nn_trainer_batches_per_epoch(const nn_trainer *t);

/* Mean loss and accuracy of net over a data set, in batches of the planned
 * size, in eval mode (nn_net_set_training(net, 0)); the caller's mode is
 * restored afterwards. */
nn_status nn_evaluate(nn_net *net, const nn_dataset *d, const nn_normalize *norm,
                      int batch, float *x_buf, int32_t *y_buf, double *loss,
                      double *accuracy);

#ifdef __cplusplus
}
#endif
#endif /* NNOPT_H */
