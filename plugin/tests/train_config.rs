//! The training config: reference defaults, and errors that name the key and its line for an
//! unknown key, a wrong type and a bad value.

use pix2pix::train::config::{
    Config, DataConfig, GanMode, InitType, LrPolicy, Mode, ModelConfig, NetD, Norm, OutputConfig,
    Preprocess, TrainConfig, DEFAULT_CONFIG_TOML,
};
use pix2pix::train::Direction;
use pix2pix_ffi::GeneratorName;

fn err(text: &str) -> String {
    let e = Config::parse(text).expect_err("the config should be refused").to_string();
    println!("{e}");
    e
}

fn assert_names(e: &str, key: &str, line: usize) {
    assert!(e.contains(key), "error does not name `{key}`: {e}");
    assert!(e.contains(&format!("line {line}")), "error does not give line {line}: {e}");
}

#[test]
fn every_key_defaults_to_the_reference() {
    let c = Config::parse("").unwrap();
    let (d, m, t, o) = (&c.data, &c.model, &c.train, &c.output);
    assert_eq!(
        (d.phase.as_str(), d.mode, d.direction, d.preprocess),
        ("train", Mode::Aligned, Direction::AtoB, Preprocess::ResizeAndCrop)
    );
    assert_eq!((d.load_size, d.crop_size, d.flip, d.max_dataset_size), (286, 256, true, None));
    assert_eq!(
        (m.net_g, m.ngf, m.net_d, m.n_layers_d, m.ndf, m.norm, m.dropout),
        (GeneratorName::Unet { side: 256 }, 64, NetD::Basic, 3, 64, Norm::Batch, true)
    );
    assert_eq!(
        (m.init_type, m.init_gain, m.init_generator.clone(), m.init_discriminator.clone()),
        (InitType::Normal, 0.02, None, None)
    );
    assert_eq!(
        (t.gan_mode, t.lambda_l1, t.lr, t.beta1, t.beta2),
        (GanMode::Vanilla, 100.0, 2e-4, 0.5, 0.999)
    );
    assert_eq!(
        (t.n_epochs, t.n_epochs_decay, t.lr_policy, t.lr_decay_iters, t.batch_size, t.max_steps),
        (100, 100, LrPolicy::Linear, 50, 1, None)
    );
    assert!(o.save_every_steps > 0 && o.sample_every_steps > 0);
}

#[test]
fn a_full_config_parses() {
    let c = Config::parse(
        r#"
[data]
root = "datasets/facades"
phase = "train"
mode = "unaligned"
direction = "BtoA"
preprocess = "scale_width_and_crop"
load_size = 300
crop_size = 256
flip = false
max_dataset_size = 100

[model]
net_g = "resnet_9blocks"
ngf = 32
net_d = "n_layers"
n_layers_d = 4
ndf = 32
norm = "instance"
dropout = false
init_type = "orthogonal"
init_gain = 1.0
init_generator = "g.pth"
init_discriminator = "d.safetensors"

[train]
gan_mode = "lsgan"
lambda_l1 = 10.0
lr = 1e-3
beta1 = 0.9
beta2 = 0.99
n_epochs = 5
n_epochs_decay = 0
lr_policy = "cosine"
lr_decay_iters = 3
batch_size = 4
seed = 42
max_steps = 1000

[output]
dir = "runs/x"
save_every_steps = 100
sample_every_steps = 10
"#,
    )
    .unwrap();
    assert_eq!(c.model.net_g, GeneratorName::Resnet { blocks: 9 });
    assert_eq!(c.data.direction, Direction::BtoA);
    assert_eq!(c.train.max_steps, Some(1000));
}

#[test]
fn unknown_key_names_key_and_line() {
    assert_names(&err("[data]\nroot = \"x\"\n\ncrop_sise = 256\n"), "data.crop_sise", 4);
    assert_names(
        &err("[train]\nlr = 0.1\n[model]\nngf = 8\nnet_G = \"unet_128\"\n"),
        "model.net_G",
        5,
    );
    assert_names(&err("[data]\nroot = \"x\"\n[trian]\nlr = 0.1\n"), "trian", 3);
}

#[test]
fn wrong_type_names_key_and_line() {
    assert_names(&err("[data]\nload_size = 286\ncrop_size = \"256\"\n"), "data.crop_size", 3);
    assert_names(&err("[model]\n\ndropout = 1\n"), "model.dropout", 3);
    assert_names(&err("[train]\nlr = \"fast\"\n"), "train.lr", 2);
    assert_names(&err("[train]\nbatch_size = -2\n"), "train.batch_size", 2);
}

#[test]
fn bad_value_names_key_and_line() {
    assert_names(&err("[model]\nnet_g = \"unet_64\"\n"), "model.net_g", 2);
    assert_names(&err("[data]\n\n\ndirection = \"AtoC\"\n"), "data.direction", 4);
    assert_names(&err("[train]\ngan_mode = \"wgangp\"\n"), "train.gan_mode", 2);
    assert_names(&err("[data]\nload_size = 286\ncrop_size = 300\n"), "data.crop_size", 3);
    assert_names(&err("[data]\ncrop_size = 100\n"), "data.crop_size", 2);
    assert_names(&err("[train]\nbatch_size = 0\n"), "train.batch_size", 2);
    assert_names(&err("[train]\nbeta1 = 1.5\n"), "train.beta1", 2);
    assert_names(&err("[model]\nngf = 0\n"), "model.ngf", 2);
    assert_names(&err("[model]\ninput_nc = 2\n"), "model.input_nc", 2);
    assert_names(&err("[model]\nngf = 8\noutput_nc = 0\n"), "model.output_nc", 3);
    // A default that the file's other values make invalid names the key and says so.
    let e = err("[data]\nload_size = 200\n");
    assert!(e.contains("data.crop_size") && e.contains("default"), "{e}");
}

#[test]
fn channel_counts_shape_both_networks() {
    let c = Config::parse("[model]\ninput_nc = 1\noutput_nc = 3\n").unwrap();
    assert_eq!(c.generator_config().channels(), (1, 3));
    assert_eq!(c.discriminator_config().in_channels, 4);
    let c = Config::parse("").unwrap();
    assert_eq!(
        (c.generator_config().channels(), c.discriminator_config().in_channels),
        ((3, 3), 6)
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let e = err("[data]\nroot = \"unterminated\n");
    assert!(e.contains("line 2"), "{e}");
}

/// The config `host train --print-config` prints is the default config, key for key.
#[test]
fn the_printed_default_config_is_the_default() {
    assert_eq!(Config::parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
}

/// Each section of the printed config names every key the section has, set or commented out,
/// and no other.
#[test]
fn the_printed_default_config_names_every_key() {
    let mut found: Vec<(String, Vec<String>)> = vec![];
    for line in DEFAULT_CONFIG_TOML.lines() {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            found.push((section.to_string(), vec![]));
            continue;
        }
        let entry = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = entry.split_once(" = ") else { continue };
        if let Some((_, keys)) = found.last_mut() {
            if key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                keys.push(key.to_string());
            }
        }
    }
    let want = [
        ("data", DataConfig::KEYS),
        ("model", ModelConfig::KEYS),
        ("train", TrainConfig::KEYS),
        ("output", OutputConfig::KEYS),
    ];
    assert_eq!(found.len(), want.len(), "sections: {found:?}");
    for ((section, keys), (want_section, want_keys)) in found.iter().zip(want) {
        assert_eq!(section, want_section);
        assert_eq!(keys, want_keys, "keys of [{section}]");
    }
}

/// Every choice a comment lists (`# "a" | "b" — …`) and every commented-out example is a value
/// the parser accepts in its place.
#[test]
fn every_choice_and_example_in_the_printed_config_parses() {
    let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
    let with_line = |i: usize, replacement: &str| {
        let mut l = lines.clone();
        l[i] = replacement;
        l.join("\n")
    };
    let mut tried = 0;
    for (i, line) in lines.iter().enumerate() {
        if let Some(example) =
            line.strip_prefix("# ").filter(|l| l.contains(" = ") && !l.starts_with(' '))
        {
            Config::parse(&with_line(i, example))
                .unwrap_or_else(|e| panic!("line {}: `{example}`: {e}", i + 1));
            tried += 1;
            continue;
        }
        let Some((assignment, comment)) = line.split_once(" # ") else { continue };
        let Some((key, _)) = assignment.split_once(" = ") else { continue };
        let Some((choices, _)) = comment.trim().split_once(" — ") else { continue };
        for choice in choices.split(" | ") {
            assert!(
                choice.starts_with('"') && choice.ends_with('"'),
                "line {}: choice {choice} is not a string",
                i + 1
            );
            let text = with_line(i, &format!("{key} = {choice}"));
            Config::parse(&text)
                .unwrap_or_else(|e| panic!("line {}: {key} = {choice}: {e}", i + 1));
            tried += 1;
        }
    }
    assert!(tried >= 25, "only {tried} choices and examples found: the comment format changed?");
}
