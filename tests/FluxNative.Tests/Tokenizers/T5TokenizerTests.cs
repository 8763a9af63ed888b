using System.Text;
using FluxNative.Testing;
using FluxNative.Tokenizers;

namespace FluxNative.Tests.Tokenizers;

/// <summary>
/// <see cref="T5Tokenizer"/> against the committed goldens: T5TokenizerFast's pipeline with sentencepiece's Unigram,
/// cross-checked by plain sentencepiece and by transformers.js (tools/reference/make_tokenizer_goldens.py).
/// </summary>
public sealed class T5TokenizerTests
{
    private static T5Tokenizer T5 => TokenizerGoldens.T5;

    public static TheoryData<string> CaseNames => TokenizerGoldens.Names(TokenizerGoldens.T5Cases);

    private static TokenizerCase Case(string name) => TokenizerGoldens.T5Cases.Single(c => c.Name == name);

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Golden_case_matches_the_reference_ids(string name)
    {
        TokenizerCase golden = Case(name);

        Assert.Equal(golden.Ids[..^1], T5.Tokenize(golden.Text));
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Spiece_model_gives_the_same_ids_as_tokenizer_json(string name)
    {
        TokenizerCase golden = Case(name);

        Assert.Equal(golden.Ids[..^1], TokenizerGoldens.T5FromModel.Tokenize(golden.Text));
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Golden_case_encodes_to_512_and_256_with_eos_and_pad(string name)
    {
        TokenizerCase golden = Case(name);
        int[] content = golden.Ids[..^1];
        foreach (int maxLength in new[] { 512, 256 })
        {
            int kept = Math.Min(content.Length, maxLength - 1);
            int[] expected = [.. content[..kept], 1, .. Enumerable.Repeat(0, maxLength - 1 - kept)];

            Assert.Equal(expected, T5.Encode(golden.Text, maxLength));
        }
    }

    [Fact]
    public void Goldens_cover_what_the_task_asks_for()
    {
        Assert.True(TokenizerGoldens.T5Cases.Count(c => c.Category == "prompt") >= 300);
        Assert.True(TokenizerGoldens.T5Cases.Count(c => c.Ids.Length > 512) >= 2, "prompts longer than 512 tokens");
        Assert.True(TokenizerGoldens.T5Cases.Count(c => c.Ids.Length > 256) >= 3, "prompts longer than 256 tokens");
    }

    [Fact]
    public void The_references_agree_except_on_the_documented_cases()
    {
        string[] sentencepiece = [.. TokenizerGoldens.T5Cases.Where(c => c.References["sentencepiece"] is not null).Select(c => c.Name)];
        string[] transformersJs = [.. TokenizerGoldens.T5Cases.Where(c => c.References["tjs"] is not null).Select(c => c.Name)];

        Assert.Equal(["stacked-combining", "t5-eos", "t5-pad-unk", "t5-sentinels", "t5-glued", "t5-fullwidth-eos"], sentencepiece);
        Assert.Equal(["stacked-combining", "t5-fullwidth-eos"], transformersJs);
    }

    [Fact]
    public void Well_known_ids_match_the_vocabulary()
    {
        Assert.Equal(32100, T5.VocabularySize);
        Assert.Equal((1, 0, 2), (T5.EosId, T5.PadId, T5.UnknownId));
        Assert.Equal([8774, 296], T5.Tokenize("Hello world"));
        Assert.Equal("▁Hello", T5.GetPiece(8774));
    }

    [Fact]
    public void Empty_text_is_eos_then_padding()
    {
        Assert.Equal([1, .. Enumerable.Repeat(0, 511)], T5.Encode(string.Empty));
        Assert.Equal([1, 0, 0], T5.Encode("   ", 3));
    }

    [Fact]
    public void Truncation_keeps_the_first_pieces_and_the_eos()
    {
        string text = string.Concat(Enumerable.Repeat("a photo of a cat on a red sofa. ", 40));
        int[] all = T5.Tokenize(text);

        Assert.True(all.Length > 256);
        Assert.Equal([.. all[..255], 1], T5.Encode(text, 256));
        Assert.Equal([1], T5.Encode(text, 1));
    }

    [Fact]
    public void Transformers_js_drops_the_eos_when_truncating_but_transformers_and_we_keep_it()
    {
        var demo = TokenizerGoldens.Header("t5-cases.json").GetProperty("truncation_demo");
        int maxLength = demo.GetProperty("max_length").GetInt32();
        int[] js = TokenizerGoldens.Ints(demo.GetProperty("transformers_js_ids"));

        int[] ids = T5.Encode(demo.GetProperty("text").GetString()!, maxLength);

        Assert.NotEqual(1, js[^1]);
        Assert.Equal(js[..^1], ids[..^1]);
        Assert.Equal(1, ids[^1]);
    }

    [Fact]
    public void Special_tokens_in_the_text_are_split_out()
    {
        Assert.Equal([3, 9, 1, 3, 115, 32099, 3, 75], T5.Tokenize("a</s>b <extra_id_0> c"));
    }

    [Fact]
    public void Unknown_characters_fuse_into_one_unknown_piece()
    {
        // '<' and '{' are not in T5's vocabulary.
        int[] ids = T5.Tokenize("x <<{{ y");

        Assert.Equal(1, ids.Count(id => id == 2));
    }

    [Fact]
    public void Batch_is_one_row_per_text()
    {
        int[][] rows = T5.EncodeBatch(["a cat", "a dog"], 8);

        Assert.Equal(T5.Encode("a dog", 8), rows[1]);
        Assert.All(rows, r => Assert.Equal(8, r.Length));
    }

    [Fact]
    public void Concurrent_use_gives_the_same_ids()
    {
        T5Tokenizer fresh = T5Tokenizer.FromDirectory(TokenizerGoldens.T5Files);
        TokenizerCase[] cases = [.. TokenizerGoldens.T5Cases];
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();

        Parallel.For(0, cases.Length * 4, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            TokenizerCase c = cases[(i * 7) % cases.Length];
            if (!fresh.Tokenize(c.Text).SequenceEqual(c.Ids[..^1]))
            {
                failures.Add(c.Name);
            }
        });

        Assert.Empty(failures);
    }

    [Fact]
    public void Directory_without_tokenizer_json_uses_spiece_model()
    {
        using var temp = new TempDirectory();
        File.Copy(Path.Combine(TokenizerGoldens.T5Files, "spiece.model"), temp.File("spiece.model"));
        File.Copy(Path.Combine(TokenizerGoldens.T5Files, "tokenizer_config.json"), temp.File("tokenizer_config.json"));

        T5Tokenizer fromModel = T5Tokenizer.FromDirectory(temp.Path);

        Assert.Equal(32100, fromModel.VocabularySize);
        Assert.Equal(T5.Encode("A cat holding a sign that says hello world", 32), fromModel.Encode("A cat holding a sign that says hello world", 32));
    }

    [Fact]
    public void Missing_folder_and_files_name_the_path()
    {
        using var temp = new TempDirectory();

        Assert.Throws<DirectoryNotFoundException>(() => T5Tokenizer.FromDirectory(temp.File("nope")));
        var empty = Assert.Throws<FileNotFoundException>(() => T5Tokenizer.FromDirectory(temp.Path));
        Assert.Contains("spiece.model", empty.Message);
        Assert.Contains("tokenizer.json", empty.Message);
        var json = Assert.Throws<FileNotFoundException>(() => T5Tokenizer.FromTokenizerJson(temp.File("tokenizer.json")));
        Assert.Contains("tokenizer.json", json.Message);
        Assert.Throws<FileNotFoundException>(() => T5Tokenizer.FromSentencePieceModel(temp.File("spiece.model")));
    }

    [Fact]
    public void Corrupt_files_are_invalid_data_naming_the_file()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("tokenizer.json"), "{ \"model\": ");
        var json = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromDirectory(temp.Path));
        Assert.Contains("tokenizer.json", json.Message);

        File.WriteAllText(temp.File("tokenizer.json"), "{ \"model\": { \"type\": \"BPE\", \"vocab\": {}, \"merges\": [] } }");
        var bpe = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromDirectory(temp.Path));
        Assert.Contains("tokenizer.json", bpe.Message);
        Assert.Contains("Unigram", bpe.Message);

        File.WriteAllText(temp.File("tokenizer.json"), "{ \"model\": { \"type\": \"Unigram\" } }");
        var noVocab = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromDirectory(temp.Path));
        Assert.Contains("tokenizer.json", noVocab.Message);

        byte[] model = File.ReadAllBytes(Path.Combine(TokenizerGoldens.T5Files, "spiece.model"));
        File.WriteAllBytes(temp.File("truncated.model"), model[..(model.Length / 2)]);
        var truncated = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromSentencePieceModel(temp.File("truncated.model")));
        Assert.Contains("truncated.model", truncated.Message);

        File.WriteAllBytes(temp.File("text.model"), Encoding.UTF8.GetBytes("this is not a protobuf file at all"));
        var text = Assert.Throws<InvalidDataException>(() => T5Tokenizer.FromSentencePieceModel(temp.File("text.model")));
        Assert.Contains("text.model", text.Message);
    }

    [Fact]
    public void Max_length_below_one_is_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => T5.Encode("a", 0));
        Assert.Throws<ArgumentNullException>(() => T5.Tokenize(null!));
    }

    [Fact]
    public void Committed_files_are_the_shared_tokenizer_files_when_those_are_present()
    {
        string shared = Path.Combine(RepoPaths.Root, "..", "shared", "data", "tokenizers", "t5-v1_1-xxl");
        if (!Directory.Exists(shared))
        {
            return; // a clean clone without shared/: the committed copies are all there is
        }

        foreach (string file in new[] { "spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(shared, file)), File.ReadAllBytes(Path.Combine(TokenizerGoldens.T5Files, file)));
        }
    }
}
