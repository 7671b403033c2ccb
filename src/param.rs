//! A named parameter tensor with an optional gradient: the gradient exists only while the
//! parameter trains, so frozen weights cost no gradient memory and no gradient work.

/// A parameter: values, shape, Hugging Face name, and a gradient buffer when trainable.
#[derive(Clone, Debug)]
pub struct Param {
    /// Name (Hugging Face key for base weights; `<module>.lora_A` / `.lora_B` for LoRA).
    pub name: String,
    /// Dimensions (PyTorch layout: a Linear weight is [out, in]).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
    /// Gradient, same layout as `data`; `None` while frozen.
    pub grad: Option<Vec<f32>>,
}

impl Param {
    /// A frozen parameter of zeros.
    pub fn zeros(name: impl Into<String>, shape: &[usize]) -> Self {
        let n = shape.iter().product();
        Param { name: name.into(), shape: shape.to_vec(), data: vec![0.0; n], grad: None }
    }

    /// Number of elements (of the shape: also for a weight whose f32 values were released, see
    /// [`crate::model::linear::Linear::release_f32`]).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the parameter trains.
    pub fn trainable(&self) -> bool {
        self.grad.is_some()
    }

    /// Makes the parameter trainable (allocating a zero gradient) or frozen (dropping it).
    pub fn set_trainable(&mut self, on: bool) {
        if on {
            if self.grad.is_none() {
                self.grad = Some(vec![0.0; self.data.len()]);
            }
        } else {
            self.grad = None;
        }
    }

    /// Zeroes the gradient, if any.
    pub fn zero_grad(&mut self) {
        if let Some(g) = &mut self.grad {
            g.fill(0.0);
        }
    }
}
