set terminal pngcairo size 1000,650 noenhanced
set output 'heal_rounds.png'
set title 'HyParView: shuffle rounds until one component reaches every live node'
set grid
set key bottom left box opaque
set datafile missing 'NaN'
set xlabel 'nodes crashed at once (%)'
set ylabel 'rounds (0 = within the repair window)'
set yrange [-0.5:*]
plot 'crash_1000.dat' using 1:6 with linespoints dt 1 lc 1 title '1000 nodes, heal rounds', \
  'crash_10000.dat' using 1:6 with linespoints dt 1 lc 2 title '10000 nodes, heal rounds'
