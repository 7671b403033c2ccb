//! The module tree of a BERT-family encoder, as PyTorch's `print(model)` shows it.

use super::config::Arch;
use super::{Encoder, EncoderLayer, HeadKind};
use crate::model::summary::{layer_norm, linear, mark};

fn block(m: &Encoder, l: &EncoderLayer, ind: &str) -> String {
    let [q, k, v, o, f1, f2] = &l.linears;
    let i2 = format!("{ind}  ");
    let mut s = String::new();
    match m.config.arch {
        Arch::DistilBert => {
            s += &format!("{ind}(attention): MultiHeadSelfAttention(\n");
            s += &format!("{i2}(dropout): Dropout(p={})\n", m.config.attention_dropout);
            for (n, x) in [("q_lin", q), ("k_lin", k), ("v_lin", v), ("out_lin", o)] {
                s += &linear(n, x, &i2);
            }
            s += &format!("{ind})\n");
            s += &layer_norm("sa_layer_norm", &l.ln1, ind);
            s += &format!("{ind}(ffn): FFN(\n{i2}(dropout): Dropout(p={})\n", m.config.hidden_dropout);
            s += &linear("lin1", f1, &i2);
            s += &linear("lin2", f2, &i2);
            s += &format!("{i2}(activation): {:?}\n{ind})\n", l.activation);
            s += &layer_norm("output_layer_norm", &l.ln2, ind);
        }
        Arch::Bert => {
            s += &format!("{ind}(attention): BertAttention(\n{i2}(self): BertSelfAttention(\n");
            let i3 = format!("{i2}  ");
            for (n, x) in [("query", q), ("key", k), ("value", v)] {
                s += &linear(n, x, &i3);
            }
            s += &format!("{i3}(dropout): Dropout(p={})\n{i2})\n{i2}(output): BertSelfOutput(\n", m.config.attention_dropout);
            s += &linear("dense", o, &i3);
            s += &layer_norm("LayerNorm", &l.ln1, &i3);
            s += &format!("{i3}(dropout): Dropout(p={})\n{i2})\n{ind})\n", m.config.hidden_dropout);
            s += &format!("{ind}(intermediate): BertIntermediate(\n");
            s += &linear("dense", f1, &i2);
            s += &format!("{i2}(intermediate_act_fn): {:?}\n{ind})\n{ind}(output): BertOutput(\n", l.activation);
            s += &linear("dense", f2, &i2);
            s += &layer_norm("LayerNorm", &l.ln2, &i2);
            s += &format!("{i2}(dropout): Dropout(p={})\n{ind})\n", m.config.hidden_dropout);
        }
    }
    s
}

/// The module tree of `model`.
pub fn module_tree(m: &Encoder) -> String {
    let (top, enc, stack, layer_name) = match m.config.arch {
        Arch::DistilBert => {
            ("DistilBertForSequenceClassification", "(distilbert): DistilBertModel(", "(transformer): Transformer(", "TransformerBlock")
        }
        Arch::Bert => ("BertForSequenceClassification", "(bert): BertModel(", "(encoder): BertEncoder(", "BertLayer"),
    };
    let e = &m.embeddings;
    let mut s = format!("{top}(\n  {enc}\n    (embeddings): Embeddings(\n");
    s += &format!(
        "      (word_embeddings): Embedding({}, {}, padding_idx={}){}\n",
        e.word.shape[0],
        e.word.shape[1],
        m.config.pad_token_id,
        mark(e.word.trainable())
    );
    s += &format!(
        "      (position_embeddings): Embedding({}, {}){}\n",
        e.position.shape[0],
        e.position.shape[1],
        mark(e.position.trainable())
    );
    if let Some(t) = &e.token_type {
        s += &format!("      (token_type_embeddings): Embedding({}, {}){}\n", t.shape[0], t.shape[1], mark(t.trainable()));
    }
    s += &layer_norm("LayerNorm", &e.ln, "      ");
    s += &format!("      (dropout): Dropout(p={})\n    )\n    {stack}\n      (layer): ModuleList(\n", m.config.hidden_dropout);
    let blocks: Vec<String> = m.layers.iter().map(|l| block(m, l, "          ")).collect();
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i;
        while j + 1 < blocks.len() && blocks[j + 1] == blocks[i] {
            j += 1;
        }
        let idx = if i == j { format!("({i})") } else { format!("({i}-{j}): {} x", j - i + 1) };
        s += &format!("        {idx} {layer_name}(\n{}        )\n", blocks[i]);
        i = j + 1;
    }
    s += "      )\n    )\n";
    let h = &m.head;
    match h.kind {
        HeadKind::Bert => {
            s += "    (pooler): BertPooler(\n";
            s += &linear("dense", &h.hidden, "      ");
            s += "      (activation): Tanh()\n    )\n  )\n";
        }
        _ => {
            s += "  )\n";
            s += &linear("pre_classifier", &h.hidden, "  ");
        }
    }
    s += &linear("classifier", &h.classifier, "  ");
    s += &format!("  (dropout): Dropout(p={})\n)\n", h.dropout);
    s
}
