//! Layer kernels, each a forward and a hand-written backward over plain slices (llm.c style):
//! outputs first, then output gradients, then saved inputs, then dimensions.

pub mod activation;
pub mod add;
pub mod attention;
pub mod bf16;
pub mod dropout;
pub mod embedding;
pub mod fastmath;
pub mod gemm;
pub mod layernorm;
pub mod linear;
pub mod lm_loss;
pub mod loss;
pub mod precision;
#[cfg(test)]
mod reference;
pub mod rmsnorm;
pub mod rope;
pub mod testing;
