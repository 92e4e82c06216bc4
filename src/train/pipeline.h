/*
 * pipeline.h - pipeline (model) parallel training: the layer graph cut into
 * K contiguous stages, one per rank of a pipeline communicator, each batch
 * split into micro-batches that flow through the stages (GPipe or 1F1B).
 * Private to the trainer (src/train/trainer.c).
 */
#ifndef NN_PIPELINE_H
#define NN_PIPELINE_H

#include "nnopt.h"

typedef struct nn_pipeline nn_pipeline;

/* Cuts net into pipe->size stages balanced by measured time or FLOPs (as
 * rank 0 of `world` measures it, the weights and buffers left as they were,
 * the gradients zero; every rank of world calls this, so that all pipelines
 * of a hybrid run cut alike) and plans its activations
 * for micro-batches of ceil(batch / micro) samples, as many copies as the
 * schedule keeps in flight on this rank's stage. Pipeline rank p runs stage
 * K-1-p: rank 0 runs the last stage, the one that sees the loss. */
nn_status nn_pipeline_new(nn_net *net, nn_comm *world, nn_comm *pipe, int micro,
                          nn_pipeline_schedule schedule, nn_stage_balance balance, int batch,
                          nn_pipeline **out);
void nn_pipeline_free(nn_pipeline *p);

/* Forward and backward of one batch x (n, C, H, W) with labels y through all
 * stages: every rank calls it with the same batch. The gradients of this
 * stage's parameters are added to the net's: the batch's mean gradient when
 * they started at zero. *loss_sum: the sum of the samples' losses on the last
 * stage, 0 on the others. */
nn_status nn_pipeline_step(nn_pipeline *p, const float *x, const int32_t *y, int n,
                           double *loss_sum);

/* The flat range [*lo, *hi) of the parameters (and of the gradients and
 * optimizer state, which share their layout) this rank's stage trains. */
void nn_pipeline_param_range(const nn_pipeline *p, size_t *lo, size_t *hi);

/* Every stage's part of buf (device memory laid out like the parameters when
 * buffers is 0, like the net's buffers when 1) from its stage to every rank
 * of the pipeline: after it, all ranks hold the same whole buffer. */
nn_status nn_pipeline_gather(nn_pipeline *p, float *buf, int buffers);

/* "conv1..pool1 | conv2..loss": the stages' first and last layers, input
 * stage first. */
const char *nn_pipeline_describe(const nn_pipeline *p);
int nn_pipeline_stage(const nn_pipeline *p);

#endif /* NN_PIPELINE_H */
