using System.Buffers.Binary;
using System.Text;

namespace FluxNative.Tokenizers;

/// <summary>
/// The parts of a SentencePiece <c>.model</c> file (a serialized <c>sentencepiece.ModelProto</c>) that a Unigram
/// tokenizer needs, read with a minimal protobuf decoder: the pieces with their scores and types, the model type,
/// and the normaliser's precompiled charsmap and dummy-prefix flag. Field numbers are those of
/// <c>sentencepiece_model.proto</c>: ModelProto.pieces = 1, trainer_spec = 2, normalizer_spec = 3;
/// SentencePiece.piece = 1, score = 2, type = 3; TrainerSpec.model_type = 3; NormalizerSpec.name = 1,
/// precompiled_charsmap = 2, add_dummy_prefix = 3.
/// </summary>
internal sealed class SentencePieceModel
{
    /// <summary>SentencePiece piece types.</summary>
    public enum PieceType
    {
        /// <summary>An ordinary piece.</summary>
        Normal = 1,

        /// <summary>The unknown piece.</summary>
        Unknown = 2,

        /// <summary>A control symbol such as &lt;pad&gt; or &lt;/s&gt;.</summary>
        Control = 3,

        /// <summary>A user-defined symbol.</summary>
        UserDefined = 4,

        /// <summary>An unused piece.</summary>
        Unused = 5,

        /// <summary>A byte-fallback piece.</summary>
        Byte = 6,
    }

    private SentencePieceModel(List<(string Piece, float Score, PieceType Type)> pieces, byte[] charsmap, bool addDummyPrefix)
    {
        Pieces = pieces;
        PrecompiledCharsmap = charsmap;
        AddDummyPrefix = addDummyPrefix;
    }

    public IReadOnlyList<(string Piece, float Score, PieceType Type)> Pieces { get; }

    public byte[] PrecompiledCharsmap { get; }

    public bool AddDummyPrefix { get; }

    public static SentencePieceModel Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"SentencePiece model not found: {path}", path);
        }

        byte[] data = File.ReadAllBytes(path);
        try
        {
            return Parse(data, path);
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or IndexOutOfRangeException or DecoderFallbackException or OverflowException)
        {
            throw new InvalidDataException($"{path}: not a valid SentencePiece model (truncated or corrupt protobuf).", e);
        }
    }

    private static SentencePieceModel Parse(byte[] data, string path)
    {
        var pieces = new List<(string, float, PieceType)>();
        byte[] charsmap = [];
        bool addDummyPrefix = true;
        int modelType = 1;
        var reader = new Reader(data, path);
        while (reader.Next(out int field, out int wire))
        {
            if (field == 1 && wire == 2)
            {
                string? piece = null;
                float score = 0;
                var type = PieceType.Normal;
                var inner = reader.Message();
                while (inner.Next(out int f, out int w))
                {
                    if (f == 1 && w == 2)
                    {
                        piece = Encoding.UTF8.GetString(inner.Bytes());
                    }
                    else if (f == 2 && w == 5)
                    {
                        score = BinaryPrimitives.ReadSingleLittleEndian(inner.Fixed32());
                    }
                    else if (f == 3 && w == 0)
                    {
                        type = (PieceType)(int)inner.Varint();
                    }
                    else
                    {
                        inner.Skip(w);
                    }
                }

                pieces.Add((piece ?? throw new InvalidDataException($"{path}: piece {pieces.Count} has no text."), score, type));
            }
            else if (field == 2 && wire == 2)
            {
                var inner = reader.Message();
                while (inner.Next(out int f, out int w))
                {
                    if (f == 3 && w == 0)
                    {
                        modelType = (int)inner.Varint();
                    }
                    else
                    {
                        inner.Skip(w);
                    }
                }
            }
            else if (field == 3 && wire == 2)
            {
                var inner = reader.Message();
                while (inner.Next(out int f, out int w))
                {
                    if (f == 2 && w == 2)
                    {
                        charsmap = inner.Bytes().ToArray();
                    }
                    else if (f == 3 && w == 0)
                    {
                        addDummyPrefix = inner.Varint() != 0;
                    }
                    else
                    {
                        inner.Skip(w);
                    }
                }
            }
            else
            {
                reader.Skip(wire);
            }
        }

        if (modelType != 1)
        {
            throw new InvalidDataException($"{path}: SentencePiece model type {modelType} is not Unigram (1).");
        }

        if (pieces.Count == 0)
        {
            throw new InvalidDataException($"{path}: no pieces; not a SentencePiece model.");
        }

        return new SentencePieceModel(pieces, charsmap, addDummyPrefix);
    }

    /// <summary>A forward-only protobuf reader over one message.</summary>
    private ref struct Reader
    {
        private readonly ReadOnlySpan<byte> data;
        private readonly string path;
        private int position;

        public Reader(ReadOnlySpan<byte> data, string path)
        {
            this.data = data;
            this.path = path;
        }

        public bool Next(out int field, out int wire)
        {
            if (position >= data.Length)
            {
                field = wire = 0;
                return false;
            }

            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            if (field == 0)
            {
                throw new InvalidDataException($"{path}: protobuf field number 0 at byte {position}; not a SentencePiece model.");
            }

            return true;
        }

        public ulong Varint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                byte b = data[position++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                {
                    return result;
                }
            }

            throw new InvalidDataException($"{path}: a protobuf varint is longer than 10 bytes.");
        }

        public ReadOnlySpan<byte> Bytes()
        {
            ulong length = Varint();
            if (length > (ulong)(data.Length - position))
            {
                throw new InvalidDataException($"{path}: a protobuf field runs past the end of the file.");
            }

            ReadOnlySpan<byte> value = data.Slice(position, (int)length);
            position += (int)length;
            return value;
        }

        public Reader Message() => new(Bytes(), path);

        public ReadOnlySpan<byte> Fixed32()
        {
            ReadOnlySpan<byte> value = data.Slice(position, 4);
            position += 4;
            return value;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0:
                    Varint();
                    break;
                case 1:
                    _ = data.Slice(position, 8);
                    position += 8;
                    break;
                case 2:
                    Bytes();
                    break;
                case 5:
                    Fixed32();
                    break;
                default:
                    throw new InvalidDataException($"{path}: protobuf wire type {wire} is not supported; not a SentencePiece model.");
            }
        }
    }
}
