package org.selfcond;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The Java binding on the JVM, against the demo model (ctest java_binding):
 *
 * <pre>java -cp selfcond.jar:selfcond-tests.jar -Dselfcond.jni.library=libselfcond_jni.so
 *     org.selfcond.SelfcondTest MODEL EXPERTS CONCEPT.json GREEDY.txt</pre>
 *
 * GREEDY.txt holds the native CLI's greedy continuation of the prompt (`selfcond generate
 * --temperature 0`), made by the test driver: the binding must produce the same text. A plain
 * main (no test framework to install): each check prints its name and the first failure exits
 * 1.
 */
public final class SelfcondTest {
  static final String PROMPT = "Once upon a time";
  static int checks = 0;

  static void check(boolean ok, String what) {
    checks++;
    if (!ok) {
      System.err.println("FAILED: " + what);
      System.exit(1);
    }
    System.out.println("ok " + checks + " - " + what);
  }

  interface Body {
    void run();
  }

  static void throwsStatus(Status want, Body body, String what) {
    try {
      body.run();
    } catch (SelfcondException e) {
      check(e.status() == want, what + " (" + e.getMessage() + ")");
      return;
    }
    check(false, what + ": no exception");
  }

  // The concept file's sentences ({"sentences": {"positive": [...], "negative": [...]}}), read
  // with a regex: the test needs no JSON library, and the file's strings have no escapes that
  // matter for the first few.
  static List<String> sentences(String json, String side, int n) {
    int at = json.indexOf("\"" + side + "\"");
    Matcher m = Pattern.compile("\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
    m.region(json.indexOf('[', at), json.length());
    List<String> out = new ArrayList<>();
    while (out.size() < n && m.find()) out.add(m.group(1).replace("\\\"", "\""));
    return out;
  }

  // The descriptor number of an open file (Android gives it: ParcelFileDescriptor.getFd(); on
  // the JVM it is found in /proc/self/fd).
  static int fdOf(Path file) throws Exception {
    try (var dir = Files.newDirectoryStream(Path.of("/proc/self/fd"))) {
      for (Path p : dir) {
        try {
          if (Files.readSymbolicLink(p).equals(file.toAbsolutePath())) {
            return Integer.parseInt(p.getFileName().toString());
          }
        } catch (java.io.IOException e) {
          // a descriptor closed meanwhile
        }
      }
    }
    throw new IllegalStateException("no descriptor for " + file);
  }

  // C API 0.11 for apps, each against an independent path: an asset inside a bundle loads from
  // its descriptor as the file does, budgets refuse before allocating, the load reports
  // progress, keepContext continues a greedy text exactly, stop strings cut it, an abort from
  // another thread stops a prefill, forcedUnits counts.
  static void appFeatures(Model model, String modelPath, String expertsPath,
      Session.GenerateParams greedy) throws Exception {
    String whole;
    try (Session s = model.newSession()) {
      whole = s.generate(PROMPT, greedy, null).text;
    }
    byte[] file = Files.readAllBytes(Path.of(modelPath));
    Path bundle = Files.createTempFile("selfcond-bundle", ".bin");
    try {
      byte[] head = new byte[4096 + 64];
      byte[] all = new byte[head.length + file.length + 7];
      System.arraycopy(file, 0, all, head.length, file.length);
      Files.write(bundle, all);
      List<Integer> progress = new ArrayList<>();
      Model.Params mp = new Model.Params();
      mp.progress = (done, total) -> progress.add(done);
      Model fromFd;
      try (java.io.RandomAccessFile raf = new java.io.RandomAccessFile(bundle.toFile(), "r")) {
        fromFd = Model.loadFd(fdOf(bundle), head.length, file.length, mp);
        check(raf.length() == all.length, "the bundle is open while the model loads");
      }  // the descriptor is closed: the model holds its own
      try (fromFd; Session s = fromFd.newSession()) {
        check(fromFd.info().hash.equals(model.info().hash), "loadFd: the asset is the model");
        check(s.generate(PROMPT, greedy, null).text.equals(whole), "loadFd: the same greedy text");
        check(progress.get(progress.size() - 1) == 1000, "load progress reaches 1000: "
            + progress.size() + " calls");
      }
    } finally {
      Files.deleteIfExists(bundle);
    }
    Model.Params small = new Model.Params();
    small.maxMemoryBytes = 1 << 20;
    throwsStatus(Status.RESOURCE_EXHAUSTED, () -> Model.load(modelPath, small), "a model budget");
    Model.Params cancel = new Model.Params();
    cancel.progress = (done, total) -> done < 500;
    throwsStatus(Status.CANCELLED, () -> Model.load(modelPath, cancel), "progress cancels a load");
    Session.Params tiny = new Session.Params();
    tiny.maxMemoryBytes = 1 << 16;
    throwsStatus(Status.RESOURCE_EXHAUSTED, () -> model.newSession(tiny), "a session budget");

    try (Session s = model.newSession()) {
      Session.GenerateParams half = new Session.GenerateParams();
      half.temperature = 0;
      half.maxNewTokens = greedy.maxNewTokens / 2;
      half.keepContext = true;
      String a = s.generate(PROMPT, half, null).text;
      half.maxNewTokens = greedy.maxNewTokens - half.maxNewTokens;
      String b = s.generate("", half, null).text;
      check((a + b).equals(whole), "keepContext continues the greedy text: [" + a + "|" + b + "]");
      int at = 6;
      while (whole.indexOf(whole.substring(at, at + 3)) != at) at++;
      Session.GenerateParams stop = new Session.GenerateParams();
      stop.temperature = 0;
      stop.maxNewTokens = greedy.maxNewTokens;
      stop.stopStrings = new String[] {whole.substring(at, at + 3)};
      Session.Result r = s.generate(PROMPT, stop, null);
      check(r.stop == Generation.Stop.STOP_STRING && r.text.equals(whole.substring(0, at)),
          "a stop string ends the text before it: [" + r.text + "]");
      stop.stopStrings = null;
      stop.repeatPenalty = 0;
      throwsStatus(Status.INVALID_ARGUMENT, () -> s.generate(PROMPT, stop, null),
          "a repeat penalty of 0");

      // An abort requested from another thread stops the next prefill; the cache is as before.
      Thread t = new Thread(s::abort);
      t.start();
      t.join();
      throwsStatus(Status.CANCELLED, () -> s.generate(PROMPT, greedy, null), "abort from a thread");
      check(s.generate(PROMPT, greedy, null).text.equals(whole), "the next call runs");

      try (Experts football = model.loadExperts(expertsPath)) {
        s.setForcing(football, 30);
        check(s.forcedUnits() == 30, "forcedUnits: 30");
        s.setForcing(football, football.numUnits + 5);
        check(s.forcedUnits() == football.numUnits, "forcedUnits: a k past the table is its size");
        s.clearForcing();
        check(s.forcedUnits() == 0, "forcedUnits: 0 when cleared");
      }
    }
    Session closed = model.newSession();
    closed.close();
    closed.abort();  // a no-op once closed
    check(true, "abort after close is harmless");
  }

  public static void main(String[] args) throws Exception {
    String modelPath = args[0], expertsPath = args[1], conceptPath = args[2];
    String cliGreedy = Files.readString(Path.of(args[3]));
    System.out.println("# selfcond " + Model.version());

    try (Model model = Model.load(modelPath)) {
      ModelInfo info = model.info();
      check(info.arch.equals("gpt2") && info.nLayer > 0 && info.numUnits > 0, "model info: " + info);
      check(info.hash.length() == 64, "the model's hash");

      // Tokens round-trip, characters outside the BMP included (UTF-8, not modified UTF-8).
      String text = "Héllo wörld 🙂 " + PROMPT;
      int[] ids = model.tokenize(text);
      check(ids.length > 0 && model.detokenize(ids).equals(text), "tokenize/detokenize round-trip");
      UnitName last = model.unitName(info.numUnits - 1);
      check(model.unitName(0).layer.equals("transformer.h.0.attn.c_attn:0")
          && last.layer.startsWith("transformer.h." + (info.nLayer - 1) + ".mlp.c_proj")
          && last.unit == info.nEmbd - 1, "unit names: " + last);
      throwsStatus(Status.OUT_OF_RANGE, () -> model.unitName(info.numUnits), "a unit out of range");

      // Greedy generation equals the native CLI's, streamed piece by piece.
      Session.GenerateParams greedy = new Session.GenerateParams();
      greedy.temperature = 0;
      greedy.maxNewTokens = 20;
      try (Session s = model.newSession()) {
        StringBuilder streamed = new StringBuilder();
        Session.Result r = s.generate(PROMPT, greedy, (tok, piece) -> {
          streamed.append(piece);
          return true;
        });
        check(r.text.equals(cliGreedy.strip()) || (PROMPT + r.text).strip().equals(cliGreedy.strip()),
            "greedy text equals the native CLI's: [" + r.text + "] vs [" + cliGreedy.strip() + "]");
        check(streamed.toString().equals(r.text), "streamed pieces make the text");
        check(r.newTokens == 20 && r.stop == Generation.Stop.MAX_TOKENS, "20 tokens, max_tokens");

        // The listener stops it.
        AtomicInteger seen = new AtomicInteger();
        Session.Result stopped = s.generate(PROMPT, greedy, (tok, piece) -> seen.incrementAndGet() < 3);
        check(stopped.newTokens == 3 && stopped.stop == Generation.Stop.CANCELLED,
            "a listener returning false stops after 3 tokens: " + stopped.newTokens + " " + stopped.stop);

        // Cancel from another thread.
        try (Generation g = s.start(PROMPT, greedy)) {
          g.next();
          Thread t = new Thread(g::cancel);
          t.start();
          t.join();
          Generation.Step step = g.next();
          check(step.done && step.stop == Generation.Stop.CANCELLED, "cancel from another thread");
        }

        // Forcing the football experts changes the text and brings the concept in.
        try (Experts football = model.loadExperts(expertsPath)) {
          check(football.numUnits > 50 && football.modelHash.equals(info.hash), "expert table: "
              + football.concept + ", " + football.numUnits + " units");
          ExpertUnit best = football.unit(0);
          check(best.ap >= football.unit(1).ap && best.layer == best.site / info.sitesPerLayer,
              "units sorted by AP, with their block");
          s.setForcing(football, 50);
          Session.Result forced = s.generate(PROMPT, greedy, null);
          check(!forced.text.equals(r.text), "forcing 50 experts changes the text: " + forced.text);
          s.clearForcing();
          check(s.generate(PROMPT, greedy, null).text.equals(r.text), "clearing the forcing");
          // ml-selfcond's CSV names no model: refused unless allowed, then checked for shape.
          String csv = football.toCsv();
          throwsStatus(Status.FAILED_PRECONDITION, () -> model.parseExperts(csv, false),
              "a table naming no model is refused by default");
          try (Experts fromCsv = model.parseExperts(csv, true)) {
            check(fromCsv.numUnits == football.numUnits
                && fromCsv.unit(0).unitId == football.unit(0).unitId, "the CSV round-trip");
          }
        }
      }

      // Ranking with progress, blocking and in steps; cancelling through the listener.
      String concept = Files.readString(Path.of(conceptPath));
      List<String> pos = sentences(concept, "positive", 6), neg = sentences(concept, "negative", 6);
      check(pos.size() == 6 && neg.size() == 6, "six sentences per class from " + conceptPath);
      Ranking.Params rp = new Ranking.Params();
      rp.topN = 100;
      List<Integer> progress = new ArrayList<>();
      try (Experts ranked = model.rank("football ⚽🙂", pos, neg, rp, (done, total) -> {
        progress.add(done);
        return true;
      })) {
        check(ranked.numUnits == 100 && ranked.numPositive == 6 && ranked.numNegative == 6,
            "ranked table: " + ranked.numUnits + " units");
        check(ranked.concept.equals("football ⚽🙂"), "the concept's name, outside the BMP too: "
            + ranked.concept);
        check(progress.get(progress.size() - 1) == 12, "progress reaches 12: " + progress);
        try (Ranking steps = model.startRanking("football", pos, neg, rp)) {
          while (!steps.isDone()) steps.step(5);
          try (Experts again = steps.finish()) {
            check(again.unit(0).unitId == ranked.unit(0).unitId, "step-wise ranking, same best unit");
          }
        }
      }
      throwsStatus(Status.CANCELLED, () -> model.rank("football", pos, neg, rp, (d, t) -> false),
          "progress returning false cancels");
      throwsStatus(Status.INVALID_ARGUMENT,
          () -> model.rank("football", pos, List.of(), rp, null), "an empty class is refused");

      appFeatures(model, modelPath, expertsPath, greedy);

      // Misuse and bad input: clear errors.
      Session.Params bad = new Session.Params();
      bad.nCtx = -5;
      throwsStatus(Status.INVALID_ARGUMENT, () -> model.newSession(bad), "a negative context");
      throwsStatus(Status.INVALID_ARGUMENT, () -> model.parseExperts("{\"units\": 3}", true),
          "a malformed table");
    }

    byte[] file = Files.readAllBytes(Path.of(modelPath));
    file[file.length / 2] ^= 1;
    throwsStatus(Status.DATA_LOSS, () -> Model.fromBytes(file, new Model.Params()),
        "a corrupted model file");
    throwsStatus(Status.NOT_FOUND, () -> Model.load("/nonexistent/model.scm"), "a missing file");

    Model closed = Model.load(modelPath);
    closed.close();
    closed.close();
    try {
      closed.tokenize("x");
      check(false, "a closed model throws");
    } catch (IllegalStateException e) {
      check(true, "a closed model throws IllegalStateException; close twice is harmless");
    }
    System.out.println("1.." + checks);
  }
}
