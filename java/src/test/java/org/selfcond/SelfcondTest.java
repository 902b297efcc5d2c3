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
