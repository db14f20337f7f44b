set terminal pngcairo size 1000,650 noenhanced
set output 'reliability.png'
set title 'HyParView: broadcast reliability after a crash of a fraction of the nodes at once'
set grid
set key bottom left box opaque
set datafile missing 'NaN'
set xlabel 'nodes crashed at once (%)'
set ylabel 'live nodes reached (%)'
set yrange [0:105]
plot 'crash_1000.dat' using 1:2 with linespoints dt 3 lc 1 title '1000 nodes, no healing', \
  'crash_10000.dat' using 1:2 with linespoints dt 3 lc 2 title '10000 nodes, no healing', \
  'crash_1000.dat' using 1:3 with linespoints dt 2 lc 1 title '1000 nodes, after 2 s repair', \
  'crash_10000.dat' using 1:3 with linespoints dt 2 lc 2 title '10000 nodes, after 2 s repair', \
  'crash_1000.dat' using 1:4 with linespoints dt 4 lc 1 title '1000 nodes, after 1 round', \
  'crash_10000.dat' using 1:4 with linespoints dt 4 lc 2 title '10000 nodes, after 1 round', \
  'crash_1000.dat' using 1:5 with linespoints dt 1 lc 1 title '1000 nodes, after last round', \
  'crash_10000.dat' using 1:5 with linespoints dt 1 lc 2 title '10000 nodes, after last round'
