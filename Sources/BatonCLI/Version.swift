import BatonCore

/// The version `baton --version` prints: the version of the Baton package this tool was built
/// from. Defined once, here; change it when the package is tagged.
public enum BatonVersion {
  public static let current = "0.1.0"

  /// What `baton --version` prints.
  static var line: String { "baton \(current)" }
}
