using FluxNative.Testing;
using FluxNative.Tokenizers;

namespace FluxNative.Tests.Tokenizers;

/// <summary>
/// <see cref="ClipTokenizer"/> against the committed goldens: ids from a Python implementation of transformers'
/// slow CLIPTokenizer (without ftfy), cross-checked by transformers.js (tools/reference/make_tokenizer_goldens.py).
/// </summary>
public sealed class ClipTokenizerTests
{
    private static ClipTokenizer Clip => TokenizerGoldens.Clip;

    public static TheoryData<string> CaseNames => TokenizerGoldens.Names(TokenizerGoldens.ClipCases);

    private static TokenizerCase Case(string name) => TokenizerGoldens.ClipCases.Single(c => c.Name == name);

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Golden_case_matches_the_reference_ids(string name)
    {
        TokenizerCase golden = Case(name);

        int[] content = Clip.Tokenize(golden.Text);

        Assert.Equal(golden.Ids[1..^1], content);
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void Golden_case_encodes_to_77_with_bos_eos_truncation_and_padding(string name)
    {
        TokenizerCase golden = Case(name);
        int[] content = golden.Ids[1..^1];
        int kept = Math.Min(content.Length, 75);
        int[] expected = [49406, .. content[..kept], 49407, .. Enumerable.Repeat(49407, 75 - kept)];

        int[] ids = Clip.Encode(golden.Text);

        Assert.Equal(77, ids.Length);
        Assert.Equal(expected, ids);
    }

    [Fact]
    public void Goldens_cover_what_the_task_asks_for()
    {
        var categories = TokenizerGoldens.ClipCases.GroupBy(c => c.Category).ToDictionary(g => g.Key, g => g.Count());
        foreach (string category in new[] { "ascii", "punctuation", "digits", "accents", "cjk", "emoji", "whitespace", "control", "html", "apostrophes", "empty", "long", "case" })
        {
            Assert.True(categories.ContainsKey(category), category);
        }

        Assert.True(categories["prompt"] >= 300, $"{categories["prompt"]} realistic prompts");
        Assert.True(TokenizerGoldens.ClipCases.Count(c => c.Ids.Length > 77) >= 5, "several prompts longer than 77 tokens");
    }

    [Fact]
    public void The_second_reference_agrees_except_on_the_documented_cases()
    {
        // transformers.js (slow-tokenizer emulation) differs only where the README explains why.
        string[] differing = [.. TokenizerGoldens.ClipCases.Where(c => c.References["tjs_emulation"] is not null).Select(c => c.Name)];

        Assert.Equal(["long-s", "cjk-extension-b"], differing);
    }

    [Fact]
    public void Well_known_ids_match_the_vocabulary()
    {
        Assert.Equal(49408, Clip.VocabularySize);
        Assert.Equal((49406, 49407, 49407), (Clip.BosId, Clip.EosId, Clip.PadId));
        Assert.Equal([320, 1125, 539, 320, 2368], Clip.Tokenize("a photo of a cat"));
    }

    [Fact]
    public void Empty_text_is_bos_eos_then_padding()
    {
        int[] ids = Clip.Encode(string.Empty);

        Assert.Equal([49406, .. Enumerable.Repeat(49407, 76)], ids);
    }

    [Fact]
    public void Truncation_keeps_bos_and_eos_and_the_first_tokens()
    {
        string text = string.Concat(Enumerable.Repeat("a photo of a cat. ", 30));
        int[] all = Clip.Tokenize(text);

        int[] ids = Clip.Encode(text, 10);

        Assert.True(all.Length > 100);
        Assert.Equal([49406, .. all[..8], 49407], ids);
    }

    [Fact]
    public void Transformers_js_drops_the_eos_when_truncating_but_transformers_and_we_keep_it()
    {
        var demo = TokenizerGoldens.Header("clip-cases.json").GetProperty("truncation_demo");
        int[] js = TokenizerGoldens.Ints(demo.GetProperty("transformers_js_ids"));

        int[] ids = Clip.Encode(demo.GetProperty("text").GetString()!, 77);

        Assert.Equal(77, js.Length);
        Assert.NotEqual(49407, js[^1]);
        Assert.Equal(js[..76], ids[..76]);
        Assert.Equal(49407, ids[76]);
    }

    [Fact]
    public void Special_token_strings_in_the_text_become_special_ids()
    {
        Assert.Equal([2368, 49407, 1929], Clip.Tokenize("cat<|endoftext|>dog"));
        Assert.Equal([49406], Clip.Tokenize("<|startoftext|>"));
    }

    [Fact]
    public void Batch_is_one_row_per_text()
    {
        int[][] rows = Clip.EncodeBatch(["a cat", "a dog", string.Empty], 16);

        Assert.Equal(3, rows.Length);
        Assert.All(rows, r => Assert.Equal(16, r.Length));
        Assert.Equal(Clip.Encode("a dog", 16), rows[1]);
    }

    [Fact]
    public void Concurrent_use_gives_the_same_ids()
    {
        ClipTokenizer fresh = ClipTokenizer.FromDirectory(TokenizerGoldens.ClipFiles);
        TokenizerCase[] cases = [.. TokenizerGoldens.ClipCases];
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();

        Parallel.For(0, cases.Length * 4, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            TokenizerCase c = cases[(i * 7) % cases.Length];
            if (!fresh.Tokenize(c.Text).SequenceEqual(c.Ids[1..^1]))
            {
                failures.Add(c.Name);
            }
        });

        Assert.Empty(failures);
    }

    [Fact]
    public void Max_length_below_two_is_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Clip.Encode("a", 1));
        Assert.Throws<ArgumentNullException>(() => Clip.Encode(null!));
    }

    [Fact]
    public void Missing_folder_and_files_name_the_path()
    {
        using var temp = new TempDirectory();

        var folder = Assert.Throws<DirectoryNotFoundException>(() => ClipTokenizer.FromDirectory(temp.File("nope")));
        Assert.Contains("nope", folder.Message);

        var vocab = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Contains("vocab.json", vocab.Message);

        File.Copy(Path.Combine(TokenizerGoldens.ClipFiles, "vocab.json"), temp.File("vocab.json"));
        var merges = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Contains("merges.txt", merges.Message);
    }

    [Fact]
    public void Corrupt_files_are_invalid_data_naming_the_file()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("vocab.json"), "{ \"a\": 1, ");
        File.Copy(Path.Combine(TokenizerGoldens.ClipFiles, "merges.txt"), temp.File("merges.txt"));
        var json = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Contains("vocab.json", json.Message);

        File.WriteAllText(temp.File("vocab.json"), "{ \"a\": 1 }");
        var missing = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Contains("vocab.json", missing.Message);

        File.Copy(Path.Combine(TokenizerGoldens.ClipFiles, "vocab.json"), temp.File("vocab.json"), overwrite: true);
        File.WriteAllText(temp.File("merges.txt"), "#version: 0.2\nthis line has three\n");
        var merges = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromDirectory(temp.Path));
        Assert.Contains("merges.txt", merges.Message);
        Assert.Contains("line 2", merges.Message);
    }

    [Fact]
    public void Committed_files_are_the_shared_tokenizer_files_when_those_are_present()
    {
        string shared = Path.Combine(RepoPaths.Root, "..", "shared", "data", "tokenizers", "clip-vit-large-patch14");
        if (!Directory.Exists(shared))
        {
            return; // a clean clone without shared/: the committed copies are all there is
        }

        foreach (string file in new[] { "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json" })
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(shared, file)), File.ReadAllBytes(Path.Combine(TokenizerGoldens.ClipFiles, file)));
        }
    }
}
