//! Translations from several threads at once on one freshly opened model: its layers make their
//! re-laid-out and packed weights on first use, while the translations run as jobs on the
//! library's thread pool (`kernels::on_pool`), so a worker waiting inside one layer's parallel
//! packing may pick up another thread's translation of the same layer (were the layer's lock
//! held while packing, that translation would wait on it forever). Every result must equal the
//! one thread's, and none may wait forever. The interleaving that would deadlock needs a worker
//! to wait on a stolen part while another translation is queued: rare on a small model, so
//! this exercises the path rather than proves its absence.

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;
use pix2pix::filter::image_tensor::ImageView;
use pix2pix::{Model, Options};

const CALLERS: usize = 4;

fn image(k: usize, w: usize, h: usize) -> Vec<u8> {
    (0..w * h * 3).map(|i| ((i * (k + 3) + i / 97) % 251) as u8).collect()
}

#[test]
fn concurrent_first_translations_share_a_model() {
    let path = fixture("unet256_ngf8_batch").join("generator.safetensors");
    let (w, h) = (256, 256);
    let one = Model::open(&path, Options::default()).unwrap();
    let expected: Vec<Vec<u8>> = (0..CALLERS)
        .map(|k| {
            let px = image(k, w, h);
            one.translate(&ImageView::new(w, h, w * 3, 3, &px).unwrap()).unwrap().data
        })
        .collect();
    // A fresh model each round: the first uses race again.
    for round in 0..4 {
        let model = Arc::new(Model::open(&path, Options::default()).unwrap());
        let (tx, rx) = mpsc::channel();
        for k in 0..CALLERS {
            let (model, tx) = (model.clone(), tx.clone());
            std::thread::spawn(move || {
                let px = image(k, w, h);
                let out = ImageView::new(w, h, w * 3, 3, &px)
                    .and_then(|v| model.translate(&v))
                    .map(|o| o.data)
                    .map_err(|e| e.to_string());
                let _ = tx.send((k, out));
            });
        }
        drop(tx);
        for _ in 0..CALLERS {
            let (k, out) = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
                panic!(
                    "round {round}: a translation did not finish within 120 s (waiting forever?)"
                )
            });
            let out = out.unwrap_or_else(|e| panic!("round {round} caller {k}: {e}"));
            assert!(out == expected[k], "round {round} caller {k}: differs from one thread's");
        }
    }
}
