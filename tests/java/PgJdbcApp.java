// A pgJDBC application: what it does must work through pgward in transaction mode as it does
// against PostgreSQL. Usage: java PgJdbcApp JDBC_URL USER PASSWORD TAG (TAG suffixes every
// object name, so the through-pgward and direct runs can share a database). Exits non-zero on
// failure.
import java.math.BigDecimal;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class PgJdbcApp {
    static String url, user, password, table;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static Connection connect() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        // Server-side named statements (S_1, ...) from the second execution on.
        p.setProperty("prepareThreshold", "2");
        return DriverManager.getConnection(url, p);
    }

    static void one(int i) throws Exception {
        try (Connection c = connect()) {
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + 1, ?::text, ?::numeric")) {
                for (int k = 0; k < 6; k++) {
                    ps.setInt(1, i + k);
                    ps.setString(2, "t" + k);
                    ps.setBigDecimal(3, new BigDecimal("2.5"));
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next() && rs.getInt(1) == i + k + 1 && rs.getString(2).equals("t" + k)
                                && rs.getBigDecimal(3).compareTo(new BigDecimal("2.5")) == 0, "select " + k);
                    }
                }
            }
            // A transaction: a batch, a savepoint rolled back to, a cursor read in pieces.
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + table + "(id, v) VALUES (?, ?)")) {
                for (int k = 0; k < 20; k++) {
                    ps.setInt(1, 1000 * i + k);
                    ps.setString(2, "b");
                    ps.addBatch();
                }
                check(ps.executeBatch().length == 20, "batch");
            }
            Savepoint sp = c.setSavepoint();
            try (Statement s = c.createStatement()) {
                s.execute("INSERT INTO " + table + "(id, v) VALUES (" + (1000 * i) + ", 'dup')");
                check(false, "no unique violation");
            } catch (SQLException e) {
                check("23505".equals(e.getSQLState()), "unique violation, got " + e.getSQLState());
                c.rollback(sp);
            }
            try (Statement s = c.createStatement()) {
                s.setFetchSize(40);
                int n = 0;
                try (ResultSet rs = s.executeQuery("SELECT g FROM generate_series(1, 250) g")) {
                    while (rs.next()) n++;
                }
                check(n == 250, "cursor rows " + n);
            }
            c.commit();
            c.setAutoCommit(true);
            try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM " + table + " WHERE id >= ? AND id < ?")) {
                ps.setInt(1, 1000 * i);
                ps.setInt(2, 1000 * i + 100);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    check(rs.getInt(1) == 20, "committed rows " + rs.getInt(1));
                }
            }
            try (Statement s = c.createStatement()) {
                s.execute("SET TIME ZONE 'Asia/Tokyo'");
                try (ResultSet rs = s.executeQuery("SHOW TimeZone")) {
                    rs.next();
                    check(rs.getString(1).equals("Asia/Tokyo"), "time zone " + rs.getString(1));
                }
            }
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getColumns(null, "public", table, null)) {
                int n = 0;
                while (rs.next()) n++;
                check(n == 2, "metadata columns " + n);
            }
            if (i % 5 == 0) {
                // A query timeout: the driver sends a CancelRequest (the query may still be
                // waiting for a server connection: the timeout covers that too).
                try (Statement s = c.createStatement()) {
                    s.setQueryTimeout(1);
                    s.execute("SELECT pg_sleep(5)");
                    check(false, "no timeout");
                } catch (SQLException e) {
                    check("57014".equals(e.getSQLState()), "timeout, got " + e.getSQLState());
                }
                try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT 5")) {
                    check(rs.next() && rs.getInt(1) == 5, "after the cancel");
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        url = args[0];
        user = args[1];
        password = args[2];
        table = "jd_t_" + args[3];
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + table + "; CREATE TABLE " + table + "(id int PRIMARY KEY, v text)");
        }
        ExecutorService pool = Executors.newFixedThreadPool(8);
        List<Future<?>> done = new ArrayList<>();
        for (int i = 1; i <= 20; i++) {
            final int n = i;
            done.add(pool.submit(() -> {
                one(n);
                return null;
            }));
        }
        try {
            for (Future<?> f : done) f.get();
        } finally {
            pool.shutdown();
        }
        System.out.println("pgjdbc ok");
    }
}
