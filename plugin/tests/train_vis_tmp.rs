#[test]
fn vis() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/facades");
    let text = format!("[data]\nroot = '{}'\ndirection = \"BtoA\"\nload_size = 143\ncrop_size = 128\n[model]\nnet_g = \"unet_128\"\nngf = 8\nndf = 8\n[train]\nmax_steps = 120\nbatch_size = 2\n[output]\ndir = '/tmp/tr/vis'\nsample_every_steps = 40\nsave_every_steps = 60\n", root.display());
    let s = pix2pix::train::train(&text, false, &mut |p| { if p.step % 20 == 0 { println!("{p:?}"); } true }).unwrap();
    println!("{s:?}");
    let model = pix2pix::Model::open(Some(&s.checkpoint_dir.join("generator.safetensors")), Default::default()).unwrap();
    let m = pix2pix::train::evaluate(&model, &root.join("test"), pix2pix::train::Direction::BtoA, 128, Some(std::path::Path::new("/tmp/tr/vis/html"))).unwrap();
    println!("{m:?}");
}
