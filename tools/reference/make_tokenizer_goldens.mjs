// Second, independent reference for the tokenizer goldens: transformers.js (npm @huggingface/transformers)
// running the FLUX tokenizer files offline. Called by make_tokenizer_goldens.py, which merges its output
// into native/tests/data/tokenizers/{clip,t5}-cases.json; see that script's docstring for how to rerun.
//
//   node tools/reference/make_tokenizer_goldens.mjs REQUEST.json RESPONSE.json
//
// REQUEST: {"clip_dir", "t5_dir", "work_dir", "texts": [...]}. RESPONSE: the ids of every text under
// three tokenizers (special tokens added, no truncation or padding) plus two truncation demonstrations.
//
// transformers.js loads tokenizers only from tokenizer.json. FLUX's CLIP folder (tokenizer/) has the slow
// files vocab.json + merges.txt, so two tokenizer.json files are assembled from them in work_dir:
//   clip-fast       what transformers' CLIPConverter makes (= CLIPTokenizerFast): NFC, \s+ -> " ", lowercase,
//                   the CLIP split regex, byte-level, BPE with "</w>"; no control-character clean-up, no CJK split.
//   clip-emulation  the same model with a normaliser that emulates the slow CLIPTokenizer without ftfy:
//                   BertNormalizer(clean_text, handle_chinese_chars, no accent stripping), NFC, lowercase.
// T5 uses FLUX's tokenizer_2/tokenizer.json and tokenizer_config.json as they are.

import fs from 'node:fs';
import path from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';

const [requestPath, responsePath] = process.argv.slice(2);
const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
const work = request.work_dir;

const CLIP_SPLIT = "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

function clipTokenizerJson(normalizer, addedNormalized) {
    const vocab = JSON.parse(fs.readFileSync(path.join(request.clip_dir, 'vocab.json'), 'utf8'));
    const lines = fs.readFileSync(path.join(request.clip_dir, 'merges.txt'), 'utf8').trim().split('\n');
    const merges = lines.slice(1, 49152 - 256 - 2 + 1);
    const added = (id, content) => ({
        id, content, single_word: false, lstrip: false, rstrip: false, normalized: addedNormalized, special: true,
    });
    return {
        version: '1.0',
        truncation: null,
        padding: null,
        added_tokens: [added(49406, '<|startoftext|>'), added(49407, '<|endoftext|>')],
        normalizer,
        pre_tokenizer: {
            type: 'Sequence',
            pretokenizers: [
                { type: 'Split', pattern: { Regex: CLIP_SPLIT }, behavior: 'Removed', invert: true },
                { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
            ],
        },
        post_processor: {
            type: 'RobertaProcessing',
            sep: ['<|endoftext|>', 49407],
            cls: ['<|startoftext|>', 49406],
            trim_offsets: false,
            add_prefix_space: false,
        },
        decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: {
            type: 'BPE',
            dropout: null,
            unk_token: '<|endoftext|>',
            continuing_subword_prefix: '',
            end_of_word_suffix: '</w>',
            fuse_unk: false,
            byte_fallback: false,
            vocab,
            merges,
        },
    };
}

function writeFolder(name, files) {
    const folder = path.join(work, name);
    fs.mkdirSync(folder, { recursive: true });
    for (const [file, content] of Object.entries(files)) {
        fs.writeFileSync(path.join(folder, file), typeof content === 'string' ? content : JSON.stringify(content));
    }
}

const clipConfig = fs.readFileSync(path.join(request.clip_dir, 'tokenizer_config.json'), 'utf8');
const clipSpecial = fs.readFileSync(path.join(request.clip_dir, 'special_tokens_map.json'), 'utf8');
writeFolder('clip-fast', {
    'tokenizer.json': clipTokenizerJson({
        type: 'Sequence',
        normalizers: [
            { type: 'NFC' },
            { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
            { type: 'Lowercase' },
        ],
    }, false),
    'tokenizer_config.json': clipConfig,
    'special_tokens_map.json': clipSpecial,
});
writeFolder('clip-emulation', {
    'tokenizer.json': clipTokenizerJson({
        type: 'Sequence',
        normalizers: [
            { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: false, lowercase: false },
            { type: 'NFC' },
            { type: 'Lowercase' },
        ],
    }, true),
    'tokenizer_config.json': clipConfig,
    'special_tokens_map.json': clipSpecial,
});
writeFolder('t5', Object.fromEntries(['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']
    .map((f) => [f, fs.readFileSync(path.join(request.t5_dir, f), 'utf8')])));

env.allowRemoteModels = false;
env.localModelPath = work;
const clipFast = await AutoTokenizer.from_pretrained('clip-fast');
const clipEmulation = await AutoTokenizer.from_pretrained('clip-emulation');
const t5 = await AutoTokenizer.from_pretrained('t5');

const encodeAll = (tok) => request.texts.map((text) => Array.from(tok.encode(text)));

// transformers.js truncates AFTER adding the special tokens, so the EOS is cut off; transformers (Python) keeps
// it (it truncates the content to max_length - 2 for CLIP, - 1 for T5). Recorded to document the difference.
const longText = 'a photo of a cat on a red sofa. '.repeat(40);
const padded = (tok, maxLength) =>
    Array.from(tok(longText, { padding: 'max_length', truncation: true, max_length: maxLength, return_tensor: false }).input_ids);

const version = env.version;
const response = {
    version,
    node: process.version,
    clip_fast: encodeAll(clipFast),
    clip_emulation: encodeAll(clipEmulation),
    t5: encodeAll(t5),
    clip_truncation_demo: { text: longText, max_length: 77, transformers_js_ids: padded(clipEmulation, 77) },
    t5_truncation_demo: { text: longText, max_length: 16, transformers_js_ids: padded(t5, 16) },
};
fs.writeFileSync(responsePath, JSON.stringify(response));
